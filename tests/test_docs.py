"""Every Python block of the documentation runs: README.md and every page under docs/.

A block is a fence opened with ```python (or ```py). The blocks of one page run in
the order they appear, each in a fresh namespace (``exec``, as ``__main__``), in a
temporary working directory shared by that page's blocks, so a block may read a file
an earlier block of the page wrote, as the text says (usage.md's Predictor reads the
checkpoint its previous block saved). Test-only settings: ``torch.manual_seed(0)``
before each block, one torch thread (conftest.py), the glyph cache in a temporary
folder, and the substitutions of ``SUBSTITUTIONS`` below, the only changes made to
what a reader sees. W&B needs nothing special: wandb is a core dependency, and the
W&B block logs offline for real (no stub, no network).

Nothing is skipped silently. A block that cannot run is marked in its page with
``<!-- not run: reason -->`` on the line before its fence; ``test_blocks_not_run``
lists those and requires a reason for each (there are none today).
"""
from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest
import torch

# What the docs say -> what the test runs instead, and why. Only for blocks that show the real
# thing (the paper's CIFAR-100/10 run on a GPU); every other block runs exactly as written.
SUBSTITUTIONS = [
    ("from avalanche.benchmarks.classic import SplitCIFAR100",
     "from avalanche_mind.data.toy import toy_class_incremental",
     "CIFAR-100 is a download: an offline generated stand-in instead"),
    ("SplitCIFAR100(n_experiences=10, seed=0)",
     "toy_class_incremental(n_experiences=10, classes_per_experience=10, per_class=2, test_per_class=1,"
     " image_size=16)",
     "the stand-in: 10 experiences of 10 classes (ids 0-99, as CIFAR-100's), 16x16 images, 20 per experience"),
    ("teacher_epochs=50", "teacher_epochs=1", "the paper's 50 + 50 epochs per experience take hours"),
    ("train_epochs=50", "train_epochs=1", "the paper's 50 + 50 epochs per experience take hours"),
    ('device="cuda"', 'device="cpu"', "CI has no GPU"),
]

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(\s*)```(python|py)\s*$")
NOT_RUN = re.compile(r"^\s*<!--\s*not run:(.*?)-->\s*$")


@dataclass
class Block:
    page: str      # path relative to the repository root
    line: int      # line of the first code line (1-based)
    code: str
    not_run: Optional[str]  # the reason given in <!-- not run: ... -->, or None

    @property
    def label(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(path: Path) -> List[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, start = opened.group(1), i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path.relative_to(ROOT)}:{i + 1}: code fence never closed"
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(previous)
        code = textwrap.dedent("\n".join(lines[start:end])) if indent else "\n".join(lines[start:end])
        blocks.append(Block(str(path.relative_to(ROOT)), start + 1, code, marker.group(1).strip() if marker else None))
        i = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
PAGES_WITH_BLOCKS = sorted({block.page for block in BLOCKS}, key=lambda page: (page != "README.md", page))


def as_run(block: Block) -> str:
    """The block's code with the substitutions applied (each keeps the line count)."""
    code = block.code
    for said, run, _why in SUBSTITUTIONS:
        code = code.replace(said, run)
    return code


def test_the_documentation_has_python_blocks():
    assert "README.md" in PAGES_WITH_BLOCKS
    assert any(page.startswith("docs/") for page in PAGES_WITH_BLOCKS)


def test_blocks_not_run():
    """The blocks marked ``<!-- not run: reason -->``, listed, each with its reason."""
    not_run = [(block.label, block.not_run) for block in BLOCKS if block.not_run is not None]
    print("blocks not run:", not_run or "none")
    for label, reason in not_run:
        assert reason, f"{label}: '<!-- not run: -->' without a reason"


def test_every_substitution_is_used():
    """A substitution no block needs any more is stale: remove it from the table."""
    codes = [block.code for block in BLOCKS if block.not_run is None]
    for said, _run, _why in SUBSTITUTIONS:
        assert any(said in code for code in codes), f"no documentation block contains {said!r}"


@pytest.fixture(scope="module")
def glyph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("glyph-cache")


@pytest.mark.parametrize("page", PAGES_WITH_BLOCKS)
def test_python_blocks_run(page, tmp_path, monkeypatch, glyph_cache):
    monkeypatch.setenv("AVALANCHE_MIND_DATA", str(glyph_cache))
    monkeypatch.chdir(tmp_path)
    for block in (b for b in BLOCKS if b.page == page and b.not_run is None):
        torch.manual_seed(0)
        # Blank lines in front, so that a traceback gives the line numbers of the page.
        code = compile("\n" * (block.line - 1) + as_run(block), block.page, "exec")
        exec(code, {"__name__": "__main__"})
    wandb = sys.modules.get("wandb")
    if wandb is not None:  # a page's W&B run must not leave wandb's process-wide settings to later tests
        wandb.teardown()
