"""The README's arguments and result tables, written from MINDConfig and the records in ``benchmarks/records/`` so they cannot drift.

::

    python benchmarks/readme_tables.py           # rewrite the tables in README.md
    python benchmarks/readme_tables.py --check   # exit 1 if README.md's tables differ from the records

Each results table sits in README.md between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``;
the arguments table, written from :class:`~avalanche_mind.core.config.MINDConfig` (its docstring's
``:param`` entries and its field defaults), between ``<!-- arguments -->`` and ``<!-- /arguments -->``.
Every figure is a record's mean ± std over its seeds; a row names the record (one
invocation of the runner) it comes from, and training times are compared only
with the reference row of the same record: two invocations ran under different loads.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks" / "records"
README = ROOT / "README.md"


@dataclass(frozen=True)
class Row:
    label: str
    record: str
    """Folder under benchmarks/records/ holding the invocation's results.json."""
    strategy: str
    """The runner's strategy name in that record."""
    time_reference: Optional[str] = None
    """Strategy of the same record the training time is compared with."""


@dataclass(frozen=True)
class Table:
    rows: List[Row]


RULES = ("likelihood_ratio", "shared_foreign", "max_confidence")

TABLES: Dict[str, Table] = {
    "glyphs-cpu": Table(
        [
            Row("**MIND (defaults: `features` negatives)**", "glyphs-cpu-negatives", "mind", "mind-no-negatives"),
            Row("MIND without negatives", "glyphs-cpu-negatives", "mind-no-negatives", "mind-no-negatives"),
            Row("MIND (paper's settings)", "glyphs-cpu-negatives", "mind-paper", "mind-no-negatives"),
            Row("MIND, `inversion` negatives", "glyphs-cpu-negatives-sources/inversion-memory",
                "mind-negatives-inversion"),
            Row("MIND, rehearsal reference (20 real images/class)", "glyphs-cpu-negatives-sources/inversion-memory",
                "mind-negative-memory"),
            Row("MIND, `transforms` negatives", "glyphs-cpu-negatives-sources/packnet-transforms",
                "mind-negatives-transforms"),
            Row("PackNet (tuned)", "glyphs-cpu", "packnet", "packnet"),
            Row("PackNet, `features` negatives", "glyphs-cpu-negatives-sources/packnet-transforms",
                "packnet-negatives-features"),
            Row("LwF (tuned)", "glyphs-cpu", "lwf", "packnet"),
            Row("EWC (tuned)", "glyphs-cpu", "ewc", "packnet"),
            Row("SI (tuned)", "glyphs-cpu", "si", "packnet"),
            Row("Naive (lower bound)", "glyphs-cpu", "naive", "packnet"),
            Row("Joint (upper bound)", "glyphs-cpu", "joint", "packnet"),
        ],
    ),
    "glyphs-vit-cpu": Table(
        [
            Row("**MIND (defaults), ViT**", "glyphs-vit-cpu", "mind", "mind"),
            Row("MIND (paper's settings), ViT", "glyphs-vit-cpu", "mind-paper", "mind"),
            Row("LwF (untuned), ViT", "glyphs-vit-cpu", "lwf", "mind"),
            Row("Naive (lower bound), ViT", "glyphs-vit-cpu", "naive", "mind"),
            Row("MIND (defaults), ResNet: the glyphs-cpu row above", "glyphs-cpu-negatives", "mind", "mind"),
        ],
    ),
    "glyphs-domain-cpu": Table(
        [
            # No earlier domain is foreign to a later one (the same classes), so the defaults
            # train exactly as without negatives: their runs are the mind-no-negatives ones.
            Row("**MIND (defaults: no earlier domain is foreign, so no negatives)**",
                "glyphs-domain-cpu-negatives", "mind-no-negatives", "mind-no-negatives"),
            Row("MIND, `features` negatives from every earlier domain (not kept)", "glyphs-domain-cpu-negatives",
                "mind", "mind-no-negatives"),
            Row("MIND (paper's settings)", "glyphs-domain-cpu-negatives", "mind-paper", "mind-no-negatives"),
            Row("PackNet (tuned)", "glyphs-domain-cpu", "packnet", "packnet"),
            Row("LwF (tuned)", "glyphs-domain-cpu", "lwf", "packnet"),
            Row("EWC (tuned)", "glyphs-domain-cpu", "ewc", "packnet"),
            Row("SI (tuned)", "glyphs-domain-cpu", "si", "packnet"),
            Row("Naive (lower bound)", "glyphs-domain-cpu", "naive", "packnet"),
            Row("Joint (upper bound)", "glyphs-domain-cpu", "joint", "packnet"),
        ],
    ),
}


def _load(record: str) -> dict:
    return json.loads((RECORDS / record / "results.json").read_text())


def _pct(summary: dict, key: str) -> str:
    mean, std = summary["mean"].get(key), summary.get("std", {}).get(key)
    if mean is None:
        return "—"
    return f"{100 * mean:.1f} ± {100 * (std or 0.0):.1f}"


def command(record: str) -> str:
    """The runner command that made ``record`` (read back from its results.json)."""
    results = _load(record)
    rules = sorted({rule for entry in results["strategies"].values() for rule in (entry.get("rules") or {})},
                   key=lambda rule: ("max_confidence", "zscore", "likelihood_ratio", "shared_foreign").index(rule))
    preset = results["preset"]["name"] if isinstance(results["preset"], dict) else results["preset"]
    return (f"python benchmarks/compare.py --preset {preset} --seeds {' '.join(map(str, results['seeds']))}"
            + (f" --rules {' '.join(rules)}" if rules else "")
            + f" --strategies {' '.join(results['strategies'])}  # benchmarks/records/{record}")


def render(table: Table) -> str:
    """The Markdown table (with the command above it) of ``table``, from the records."""
    head = ["Strategy", *[f"TAg % (`{r}`)" for r in RULES[:1]], "TaskId %", "TAw %",
            *[f"TAg % (`{r}`)" for r in RULES[1:]], "seeds", "train s (ratio in its record)", "params held",
            "other state MB", "record"]
    records = list(dict.fromkeys(row.record for row in table.rows))
    lines = ["```bash", *(command(record) for record in records), "```", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        strategies = _load(row.record)["strategies"]
        entry = strategies[row.strategy]
        rules = entry.get("rules") or {}
        first = rules.get(RULES[0], entry)  # a strategy without a task choice: its own TAg
        seconds = entry["mean"]["train_time_s"]
        ratio = ""
        if row.time_reference is not None:
            ratio = f" ({seconds / strategies[row.time_reference]['mean']['train_time_s']:.2f}x)"
        cells = [
            row.label, _pct(first, "tag"), _pct(first, "taskid"), _pct(entry, "taw"),
            *[_pct(rules[r], "tag") if r in rules else "—" for r in RULES[1:]],
            str(len(entry["runs"])), f"{seconds:.0f}{ratio}", f"{entry['mean']['params_kept'] / 1e6:.3f}M",
            f"{entry['mean']['state_mb']:.1f}", f"`{row.record}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RECORDED_ONLY = ("optimizer", "teacher_optimizer")
"""MINDConfig fields that record what ran rather than set it: not rows of the arguments table."""


def _markdown(text: str) -> str:
    """A docstring fragment as Markdown: ``code`` and :role:`target` as `code`, "choices" as `"choices"`."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", " ".join(text.split()))
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return re.sub(r'(?<![`\w])"(\w+)"', r'`"\1"`', text)


def _value(value) -> str:
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def config_parameters() -> List[tuple]:
    """``(names, meaning)`` of every ``:param`` entry of MINDConfig's docstring, in order."""
    from avalanche_mind.core.config import MINDConfig

    doc = MINDConfig.__doc__
    return [(tuple(n.strip() for n in names.split(",")), meaning)
            for names, meaning in re.findall(r":param ([\w, ]+): (.*?)(?=\n\s*:param |\n\s*\n|$)", doc, re.S)]


def arguments_table() -> str:
    """The README's arguments table: one row per ``:param`` of MINDConfig, defaults from its fields."""
    import dataclasses

    from avalanche_mind.core.config import MINDConfig
    from avalanche_mind.settings import PAPER_SETTINGS

    fields = {f.name: f for f in dataclasses.fields(MINDConfig)}
    lines = ["| argument | default | meaning |", "|---|---|---|"]
    for names, meaning in config_parameters():
        if set(names) <= set(RECORDED_ONLY):
            continue
        defaults = []
        for name in names:
            default = fields[name].default
            cell = "required" if default is dataclasses.MISSING else _value(default)
            if name in PAPER_SETTINGS and PAPER_SETTINGS[name] != default:
                cell += f" (paper: {_value(PAPER_SETTINGS[name])})"
            defaults.append(cell)
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {', '.join(defaults)} | {_markdown(meaning)} |")
    return "\n".join(lines)


def _pattern(name: str) -> "re.Pattern[str]":
    return re.compile(rf"(<!-- results:{re.escape(name)} -->\n)(.*?)(<!-- /results:{re.escape(name)} -->)", re.S)


def rewritten(text: str) -> str:
    """``text`` (the README) with the arguments block and every results block written afresh."""
    arguments = re.compile(r"(<!-- arguments -->\n)(.*?)(<!-- /arguments -->)", re.S)
    if not arguments.search(text):
        raise SystemExit("README.md has no block <!-- arguments --> ... <!-- /arguments -->")
    text = arguments.sub(lambda m: m.group(1) + arguments_table() + "\n" + m.group(3), text)
    for name, table in TABLES.items():
        pattern = _pattern(name)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no block <!-- results:{name} --> ... <!-- /results:{name} -->")
        text = pattern.sub(lambda m: m.group(1) + render(table) + "\n" + m.group(3), text)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check README.md; exit 1 if it differs")
    args = parser.parse_args(argv)
    text = README.read_text()
    new = rewritten(text)
    if args.check:
        if new != text:
            print("README.md's result tables differ from benchmarks/records/: run python benchmarks/readme_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
