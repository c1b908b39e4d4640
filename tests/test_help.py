"""The command line's help: fast (no torch, no Avalanche imported) and complete (every name of every list).

Each list of names a help text shows is built from the constant the code checks against
(:mod:`avalanche_mind.settings`, :mod:`avalanche_mind.runner.names`, the presets), so a
name added there is in the help; these tests hold both properties.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from avalanche_mind import cli, settings
from avalanche_mind.cli.parser import COMMAND_HELP
from avalanche_mind.runner import compare, names
from avalanche_mind.runner.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent

HELP_PATHS = textwrap.dedent("""
    import contextlib, io, runpy, sys

    def heavy():
        return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "avalanche"))

    def run(label, call):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                call()
            except SystemExit as exit:
                assert exit.code in (0, None), (label, exit.code)
        print(label, heavy()[:5])

    import avalanche_mind, avalanche_mind.settings
    print("import", heavy()[:5])
    from avalanche_mind.cli import main
    run("avalanche-mind --help", lambda: main(["--help"]))
    run("avalanche-mind train --help", lambda: main(["train", "--help"]))
    run("avalanche-mind evaluate --help", lambda: main(["evaluate", "--help"]))
    run("compare --help", lambda: main(["compare", "--help"]))
    run("compare --list-presets", lambda: main(["compare", "--list-presets"]))
    sys.argv = ["benchmarks/compare.py", "--help"]
    run("python benchmarks/compare.py --help", lambda: runpy.run_path("benchmarks/compare.py", run_name="__main__"))
""")


def test_the_help_needs_neither_torch_nor_avalanche():
    """A property, not a timing: importing torch and Avalanche is what makes a command line take ten seconds."""
    done = subprocess.run([sys.executable, "-c", HELP_PATHS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 7, done.stdout
    for line in lines:
        assert line.endswith(" []"), f"imported torch or Avalanche: {line}"


def _help(argv, capsys) -> str:
    """What ``avalanche-mind argv`` (a ``--help``) prints."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(argv))
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _name(value) -> str:
    return "none" if value is None else str(value)


HELPS = {
    ("--help",): {"commands": tuple(COMMAND_HELP)},
    ("train", "--help"): {
        "rules": settings.TASK_INFERENCE_RULES, "losses": settings.DISTILL_LOSS_NAMES,
        "models": settings.MODEL_NAMES, "benchmarks": settings.BENCHMARK_NAMES,
        "negatives": settings.NEGATIVE_SOURCES, "rejections": settings.REJECTIONS,
        "new weights": settings.NEW_WEIGHTS, "W&B modes": settings.WANDB_MODES,
    },
    ("evaluate", "--help"): {"rules": settings.TASK_INFERENCE_RULES, "models": settings.MODEL_NAMES,
                             "benchmarks": settings.BENCHMARK_NAMES},
    ("export", "--help"): {"rules": settings.TASK_INFERENCE_RULES, "models": settings.MODEL_NAMES},
    ("compare", "--help"): {
        "strategies": names.STRATEGY_NAMES, "rules": settings.TASK_INFERENCE_RULES, "presets": tuple(PRESETS),
        "benchmarks": settings.BENCHMARK_NAMES, "tuned baselines": names.TUNED, "W&B modes": settings.WANDB_MODES,
    },
}
"""Each help text -> the lists of names it shows."""


@pytest.mark.parametrize("argv", list(HELPS), ids=" ".join)
def test_every_help_lists_every_name_of_its_lists(argv, capsys):
    text = _help(argv, capsys)
    for what, values in HELPS[argv].items():
        missing = [_name(v) for v in values if not re.search(rf"(?<![\w-]){re.escape(_name(v))}(?![\w-])", text)]
        assert not missing, f"`avalanche-mind {' '.join(argv)}` lacks these {what}: {missing}"


def test_the_runner_s_help_is_the_command_s(capsys):
    """``benchmarks/compare.py --help`` and ``avalanche-mind compare --help`` print the same parser."""
    assert compare.build_parser().format_help() == _help(["compare", "--help"], capsys)


def test_each_name_list_is_one_constant_that_the_code_checks():
    from avalanche_mind.core import distributed
    from avalanche_mind.core.losses import DISTILL_LOSSES
    from avalanche_mind.data.registry import benchmark_names
    from avalanche_mind.logging import wandb_avalanche_logger
    from avalanche_mind.models.registry import MODEL_NAMES, MODELS
    from avalanche_mind.runner.strategies import STRATEGIES
    from avalanche_mind.runner.tuning import GRIDS
    from avalanche_mind.task_id import rules

    assert rules.TASK_INFERENCE_RULES is settings.TASK_INFERENCE_RULES and rules.check_rule is settings.check_rule
    assert MODEL_NAMES is settings.MODEL_NAMES and ("auto", *MODELS) == settings.MODEL_NAMES
    assert tuple(DISTILL_LOSSES) == settings.DISTILL_LOSS_NAMES
    assert tuple(benchmark_names()) == settings.BENCHMARK_NAMES
    assert tuple(STRATEGIES) == names.STRATEGY_NAMES and tuple(GRIDS) == names.TUNED
    # Written twice until core.distributed and the W&B logger import them from settings: equal meanwhile.
    assert tuple(wandb_avalanche_logger.WANDB_MODES) == settings.WANDB_MODES
    assert distributed.DEFAULT_TIMEOUT_S == settings.DEFAULT_TIMEOUT_S
    with pytest.raises(RuntimeError, match="keep the two equal"):
        settings.check_names("a registry", ["a", "b"], ("a",))


def test_only_the_named_command_s_options_are_built():
    light = cli.build_parser(commands=[])
    full = cli.build_parser()
    assert light.format_help() == full.format_help()  # the command list is the same
    assert full.parse_args(["evaluate", "ckpt.pt"]).checkpoint == "ckpt.pt"
    assert cli.build_parser(commands=["evaluate"]).parse_args(["evaluate", "ckpt.pt", "--quiet"]).quiet
