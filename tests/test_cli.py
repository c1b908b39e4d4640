"""The ``avalanche-mind`` command: help, train (checkpoints, resume), evaluate, compare."""
from __future__ import annotations

import argparse
import errno
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from avalanche_mind import MIND, cli
from avalanche_mind.io.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--benchmark", "toy", "--benchmark-arg", "n_experiences=3", "--benchmark-arg", "per_class=16",
        "--benchmark-arg", "test_per_class=8", "--benchmark-arg", "image_size=12", "--model", "small_cnn",
        "--model-arg", "width=6", "--teacher-epochs", "2", "--epochs", "2", "--batch-size", "16",
        "--lr", "0.01", "--teacher-lr", "0.01", "--milestones", "1", "--teacher-milestones", "1", "--quiet"]


def subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_of_every_command_is_explained(capsys):
    parser = cli.build_parser()
    commands = subparsers(parser)
    assert set(commands) == {"train", "evaluate", "compare", "export"}
    for name in ("train", "evaluate", "export"):
        for action in commands[name]._actions:
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings} has no help"
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for action in commands[name]._actions:
            for option in action.option_strings:
                assert option in text
    for option in ("--checkpoint", "--resume", "--quiet", "--wandb-mode", "--wandb-project", "--wandb-entity",
                   "--wandb-run-name", "--wandb-tags"):
        assert option in [o for a in commands["train"]._actions for o in a.option_strings]


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["avalanche-mind"] == "avalanche_mind.cli:main"


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_evaluate_the_checkpoint(tmp_path, capsys):
    ckpt, results = tmp_path / "mind.pt", tmp_path / "results.json"
    code, out, err = run_cli(["train", *TINY, "--checkpoint", ckpt, "--results", results], capsys)
    assert code == 0, err
    final = json.loads(results.read_text())["final"]
    assert set(final) >= {"TAg", "TAw", "TaskId"} and final["TAw"] > final["TAg"]
    assert "teacher exp" not in err  # --quiet: no progress bars
    checkpoint = read_checkpoint(ckpt)
    assert checkpoint.n_trained == 3 and checkpoint.extra["cli"]["benchmark"] == "toy"

    report = tmp_path / "eval.json"
    code, out, err = run_cli(["evaluate", ckpt, "--json", report], capsys)  # benchmark/model from the checkpoint
    assert code == 0, err
    summary = json.loads(report.read_text())["summary"]
    for key in ("TAg", "TAw", "TaskId"):  # no strategy, same numbers
        assert summary[key] == pytest.approx(final[key])
    assert "TAg" in out and len(json.loads(report.read_text())["experiences"]) == 3
    code, out, _ = run_cli(["evaluate", ckpt, "--quiet"], capsys)
    assert code == 0 and out.strip().splitlines()[0].startswith("all: TAg")  # no table, only the summary


class Interrupted(Exception):
    pass


def test_interrupted_training_resumes_to_the_same_result(tmp_path, capsys, monkeypatch):
    full = tmp_path / "full.json"
    assert run_cli(["train", *TINY, "--checkpoint", tmp_path / "full.pt", "--results", full], capsys)[0] == 0

    from avalanche_mind.core.strategy import MIND

    original, calls = MIND.train, []

    def train_then_crash(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted("killed during the third experience")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MIND, "train", train_then_crash)
    ckpt, resumed = tmp_path / "mind.pt", tmp_path / "resumed.json"
    with pytest.raises(Interrupted):
        cli.main([str(a) for a in ["train", *TINY, "--checkpoint", ckpt]])
    monkeypatch.setattr(MIND, "train", original)
    assert read_checkpoint(ckpt).n_trained == 2

    code, out, err = run_cli(["train", *TINY, "--checkpoint", ckpt, "--resume", "--results", resumed], capsys)
    assert code == 0, err
    a, b = json.loads(full.read_text()), json.loads(resumed.read_text())
    assert b["final"] == a["final"] and b["metrics"] == a["metrics"]
    weights_a = read_checkpoint(tmp_path / "full.pt").body["model"]
    weights_b = read_checkpoint(ckpt).body["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

    # Resuming with other settings is refused, naming the difference.
    code, _, err = run_cli(["train", *TINY, "--beta", "1", "--checkpoint", ckpt, "--resume"], capsys)
    assert code == 2 and "beta" in err


def test_user_errors_are_one_line_messages(tmp_path, capsys):
    ckpt = tmp_path / "mind.pt"
    code, _, err = run_cli(["train", "--benchmark", "no-such-benchmark", "--quiet"], capsys)
    assert code == 2 and "no-such-benchmark" in err and "Traceback" not in err
    code, _, err = run_cli(["evaluate", tmp_path / "missing.pt"], capsys)
    assert code == 2 and "no checkpoint" in err
    ckpt.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["evaluate", ckpt, "--benchmark", "toy"], capsys)
    assert code == 2 and "not a readable avalanche-mind checkpoint" in err
    code, _, err = run_cli(["train", *TINY, "--resume"], capsys)
    assert code == 2 and "--resume needs --checkpoint" in err


def test_evaluate_with_the_wrong_model_is_refused(tmp_path, capsys):
    ckpt = tmp_path / "mind.pt"
    tiny = [a for a in TINY]
    tiny[tiny.index("n_experiences=3")] = "n_experiences=2"
    tiny[tiny.index("per_class=16")] = "per_class=8"
    assert run_cli(["train", *tiny, "--checkpoint", ckpt], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", ckpt, "--model-arg", "width=8"], capsys)
    assert code == 2 and "different model architecture" in err


DECOY = "raise RuntimeError('a benchmarks folder in the working directory was imported')\n"
RUN_IN_CWD = textwrap.dedent("""
    import sys
    from avalanche_mind.cli import main

    for command in (["compare", "--help"], ["compare", "--list-presets"]):
        try:
            status = main(command)
        except SystemExit as exit:
            status = exit.code
        print("STATUS", status)
    print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] == "benchmarks"))
""")


def test_compare_runs_from_the_package_never_from_a_benchmarks_folder(tmp_path):
    """The installed command has the runner in it: a ``benchmarks/`` in the working directory is never imported."""
    decoy = tmp_path / "benchmarks"
    decoy.mkdir()
    for name in ("__init__.py", "presets.py", "compare.py"):
        (decoy / name).write_text(DECOY)
    # ``python -c`` puts the working directory first on sys.path, where the decoy would win.
    done = subprocess.run([sys.executable, "-c", RUN_IN_CWD], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("STATUS 0") == 2
    assert "--preset" in done.stdout and "--list-presets" in done.stdout  # the runner's own help
    assert "glyphs-cpu" in done.stdout and "tiny-domain" in done.stdout  # the presets
    assert "IMPORTED []" in done.stdout


def test_paper_flag_gives_the_papers_method_and_defaults_stay_mind_s():
    from avalanche_mind import PAPER_SETTINGS
    from avalanche_mind.cli import build_parser
    from avalanche_mind.cli.train import resolve_train

    def mind_settings(*options):
        return resolve_train(build_parser().parse_args(["train", "--benchmark", "toy", *options]))["mind"]

    assert "self_distillation" not in mind_settings()  # MIND's own default applies
    assert mind_settings("--paper").items() >= PAPER_SETTINGS.items()
    assert mind_settings("--paper", "--self-distillation")["self_distillation"] is True
    assert mind_settings("--no-self-distillation")["self_distillation"] is False
    assert mind_settings("--rejection", "none")["rejection"] is None
    assert mind_settings("--task-inference", "zscore")["task_inference"] == "zscore"
    preset = resolve_train(build_parser().parse_args(["train", "--preset", "tiny", "--epochs", "3"]))
    assert (preset["benchmark"], preset["model"], preset["model_kwargs"]) == ("toy", "small_cnn", {"width": 4})
    assert preset["mind"]["teacher_epochs"] == 1 and preset["mind"]["train_epochs"] == 3  # the option wins


@pytest.mark.parametrize("option", ["--results", "--checkpoint"])
def test_train_refuses_an_unwritable_output_before_training(tmp_path, capsys, monkeypatch, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    trained = []
    monkeypatch.setattr(MIND, "train", lambda *a, **k: trained.append(1))
    code, out, err = run_cli(["train", *TINY, option, blocker / "out" / "x"], capsys)
    assert code == 2 and not trained
    assert err.strip() == (f"avalanche-mind train: error: {option} {blocker / 'out' / 'x'} cannot be written: "
                           f"{blocker} is a file, not a folder. (Checked before training, so no work is lost.)")


@pytest.mark.parametrize("argv, message", [
    (["--device", "cuda:99"], "--device cuda:99: "),
    (["--device", "nonsense"], "--device 'nonsense' is not a torch device; use cpu, cuda or cuda:N"),
    (["--model-arg", "width=0"], "the model has empty layers (0.weight has shape [0, 3, 3, 3]"),
    (["--lr", "inf"], "lr must be finite, got inf"),
    (["--lr-gamma", "nan"], "lr_gamma must be finite, got nan"),
    (["--beta", "inf"], "beta must be finite, got inf"),
])
def test_train_reports_a_bad_option_in_one_line_with_status_2(tmp_path, capsys, argv, message):
    code, out, err = run_cli(["train", *TINY, *argv], capsys)
    assert code == 2
    assert err.startswith("avalanche-mind train: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_in_train_names_the_last_checkpoint_and_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "run.pt"
    real_train = MIND.train
    calls = []

    def train_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(MIND, "train", train_then_interrupt)
    argv = ["train", *TINY, "--checkpoint", str(ckpt)]
    code, out, err = run_cli(argv, capsys)
    assert code == 130
    lines = err.strip().splitlines()
    assert lines[0] == (f"avalanche-mind train: interrupted after 1 of 3 experiences; the last checkpoint, "
                        f"{ckpt}, holds 1 trained experience(s).")
    assert lines[1] == "Resume with: " + shlex.join(["avalanche-mind", *argv, "--resume"])
    monkeypatch.setattr(MIND, "train", real_train)
    code, out, err = run_cli(shlex.split(lines[1].split(": ", 1)[1])[1:], capsys)
    assert code == 0, err
    assert read_checkpoint(ckpt).n_trained == 3


def test_a_full_disk_keeps_the_previous_checkpoint_and_train_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import avalanche_mind.io.checkpoint as checkpoint

    ckpt = tmp_path / "run.pt"
    real_save = checkpoint.torch.save

    def save(obj, fh, *args, **kwargs):
        if ckpt.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    code, out, err = run_cli(["train", *TINY, "--checkpoint", ckpt], capsys)
    assert code == 2
    assert err.startswith(f"avalanche-mind train: error: could not write {ckpt}: No space left on device; the "
                          f"last checkpoint, {ckpt}, holds 1 trained experience(s); after freeing space, resume "
                          "with: avalanche-mind train ")
    monkeypatch.undo()
    assert checkpoint.read_checkpoint(ckpt).n_trained == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_train_s_line_per_experience_averages_over_the_trained_experiences(tmp_path, capsys):
    loud = [a for a in TINY if a != "--quiet"]
    code, out, err = run_cli(["train", *loud], capsys)
    assert code == 0, err
    first = next(line for line in out.splitlines() if line.startswith("[1/3]"))
    values = dict(cell.split() for cell in first[len("[1/3] "):].split(" (")[0].split(", "))
    assert first.endswith("(on the 1 trained test experience)")
    assert values["TaskId"] == "1.0000" and values["TAg"] == values["TAw"]  # one task: TAg is TAw


def test_importing_the_package_and_its_command_prints_no_qpsolvers_warning():
    # The package imports lazily: Avalanche (whose qpsolvers warns) comes with the first name that needs it,
    # through the package (MIND) or a submodule (the runner's baselines).
    code = ("import avalanche_mind.cli, avalanche_mind; from avalanche_mind import MIND; "
            "import avalanche_mind.runner.baselines; assert 'avalanche' in __import__('sys').modules")
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True)
    assert "qpsolvers" not in result.stderr and "QP solver" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    assert cli.main(["train", *TINY, "--checkpoint", str(path)]) == 0
    return path


def test_evaluate_refuses_a_benchmark_whose_classes_differ_from_the_checkpoint_s(trained_checkpoint, capsys):
    code, out, err = run_cli(["evaluate", trained_checkpoint, "--benchmark-arg", "n_experiences=2", "--benchmark-arg",
                              "classes_per_experience=3", "--benchmark-arg", "image_size=12"], capsys)
    assert code == 2
    assert err.startswith(f"avalanche-mind evaluate: error: benchmark 'toy' does not match {trained_checkpoint}: "
                          "its test experience 0 has classes [0, 1, 2], the checkpoint's experience 0 was trained "
                          "on [0, 1]")
