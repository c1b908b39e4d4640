"""The package's shape: no import circle, no module over 400 lines, the public names importable.

Read from the source with :mod:`ast` (every import statement, also those inside
functions and ``TYPE_CHECKING`` blocks: a lazy import that closes a circle is
still a circle in the design).
"""
from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "avalanche_mind"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (``from a.b import c`` is ``a.b.c`` when that is a module)."""
    modules = _modules()
    graph: Dict[str, Set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read():
    graph = import_graph()
    # A check that finds no edge would pass for the wrong reason.
    assert "avalanche_mind.core.ownership" in graph["avalanche_mind.core.strategy"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_module_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("name", __import__("avalanche_mind").__all__)
def test_every_public_name_imports(name):
    import avalanche_mind

    assert getattr(avalanche_mind, name) is not None


def test_the_readme_imports_work():
    """Every ``from avalanche_mind... import ...`` line of the README and the docs names something that exists."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    lines = {m.group(0) for path in texts if path.exists()
             for m in re.finditer(r"^\s*from (avalanche_mind[\w.]*) import ([\w, ]+)$", path.read_text(), re.M)}
    assert lines, "the README shows how to import the package"
    for line in sorted(lines):
        module, names = re.match(r"\s*from ([\w.]+) import ([\w, ]+)", line).groups()
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), line
