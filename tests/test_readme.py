"""The README a newcomer reads: short, no lab-notebook traces, its figures equal to the records."""
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short_and_has_no_commit_hashes_or_issue_numbers():
    assert len(README.splitlines()) <= 250
    assert not re.search(r"\bissue\s*#?\d+", README, re.I)
    assert not re.search(r"(?<![\w/.-])[0-9a-f]{7,40}(?![\w-])", README), "a commit hash in the README"


def test_the_result_tables_equal_the_records():
    tables = _tables()
    assert tables.rewritten(README) == README, "run python benchmarks/readme_tables.py"
    # The check reads real figures: the defaults' TAg on glyphs-cpu is in the table, from its record.
    mind = tables._load("glyphs-cpu-negatives")["strategies"]["mind"]["rules"]["likelihood_ratio"]["mean"]["tag"]
    assert f"| **MIND (defaults: `features` negatives)** | {100 * mind:.1f} ± " in README


def test_a_changed_record_would_be_noticed(monkeypatch):
    tables = _tables()
    real = tables._load

    def shifted(record):
        results = real(record)
        for entry in results["strategies"].values():
            entry["mean"]["taw"] = (entry["mean"]["taw"] or 0) + 0.01
        return results

    monkeypatch.setattr(tables, "_load", shifted)
    assert tables.rewritten(README) != README


def test_the_arguments_table_covers_every_setting_of_mind_config():
    import dataclasses

    from avalanche_mind.core.config import MINDConfig

    tables = _tables()
    documented = [name for names, _ in tables.config_parameters() for name in names]
    assert sorted(documented) == sorted(f.name for f in dataclasses.fields(MINDConfig))
    table = tables.arguments_table()
    for name in documented:
        if name not in tables.RECORDED_ONLY:
            assert f"`{name}`" in table and f"`{name}`" in README
    assert '| `task_inference` | `"likelihood_ratio"` (paper: `"max_confidence"`)' in table
