"""Issue 12: nothing a user trained is lost; bad input fails before the work, with one clear message."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avalanche_mind import MIND, gate_model, small_cnn
from avalanche_mind.errors import TrainingDivergedError
from helpers import FAST, make_mind, quiet_evaluator


def build(**kwargs):
    return MIND(model=small_cnn(10), n_experiences=2, evaluator=None, **kwargs)


# ------------------------------------------------------------- item 3 and 8: construction
@pytest.mark.parametrize("name, value, message", [
    ("beta", math.inf, "beta must be finite"),
    ("lr", math.inf, "lr must be finite"),
    ("lr_gamma", math.nan, "lr_gamma must be finite"),
    ("teacher_lr", -1.0, "teacher_lr must be > 0"),
    ("temperature", math.inf, "temperature must be finite"),
    ("weight_decay", math.nan, "weight_decay must be finite"),
    ("rejection_weight", math.inf, "rejection_weight must be finite"),
    ("lr", "0.1", "lr must be a number, got '0.1'"),
    ("beta", "5", "beta must be a number"),
    ("milestones", "40", "milestones must be a list of integer epochs"),
    ("milestones", [2.5], "milestones must be a list of integer epochs"),
    ("teacher_milestones", 35, "teacher_milestones must be a list"),
    ("self_distillation", "no", "self_distillation must be True or False, got 'no'"),
    ("weight_sharing", 1, "weight_sharing must be True or False"),
    ("eval_mb_size", 0, "eval_mb_size must be an integer >= 1"),
])
def test_bad_argument_named_at_construction(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build(**{name: value})


def test_good_arguments_still_accepted():
    build(milestones=(40,), teacher_milestones=[], lr=1, beta=0, temperature=6.5, self_distillation=False)


# ------------------------------------------------------------- item 3: divergence
@pytest.mark.parametrize("phase, overrides", [
    ("teacher", {"teacher_lr": 1e30}),
    ("distillation", {"lr": 1e30}),
])
def test_diverging_run_stops_naming_experience_phase_epoch(class_incremental, phase, overrides):
    strategy = make_mind(n_experiences=5, teacher_epochs=2, train_epochs=2, **overrides)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match=rf"experience 0 \(MIND task 0\), {phase} phase, epoch \d+ of 2"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0  # nothing of the failed experience kept
    after = strategy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------- item 4: rollback
class Interrupt(Exception):
    pass


def test_failed_experience_is_rolled_back_and_can_be_retried(class_incremental):
    from avalanche.core import SupervisedPlugin

    class FailOnce(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.armed = True

        def after_training_epoch(self, strategy, **kwargs):
            if self.armed:
                self.armed = False
                raise Interrupt

    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, plugins=[FailOnce()], teacher_epochs=1, train_epochs=1)
    with pytest.raises(Interrupt):
        strategy.train(stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0 and strategy.state.experience_ids == []
    assert all(int(layer.owner.max()) < 0 for _, layer in strategy.ownership.layers.items())
    strategy.train(stream[0], eval_streams=[])
    strategy.train(stream[1], eval_streams=[])  # the stream can finish
    assert strategy.state.experience_ids == [0, 1]
    strategy.eval(class_incremental.test_stream)


def test_empty_experience_refused_naming_it(class_incremental):
    from avalanche.benchmarks.utils import AvalancheDataset

    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, teacher_epochs=1, train_epochs=1)
    experience = stream[0]
    empty = experience.dataset.subset([])
    experience.dataset, original = empty, experience.dataset
    try:
        with pytest.raises(ValueError, match="experience 0 has no samples"):
            strategy.train(experience, eval_streams=[])
    finally:
        experience.dataset = original
    assert strategy.state.n_tasks == 0
    strategy.train(stream[0], eval_streams=[])
    strategy.eval(class_incremental.test_stream)


# ------------------------------------------------------------- item 7: the classifier
def test_partly_gated_model_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    gate_model(nn.Sequential(model[0]))  # backbone gated, head plain
    model[2] = nn.Linear(4 * 30 * 30, 10)
    with pytest.raises(ValueError, match=r"only partly gated: '2' are plain nn.Conv2d/nn.Linear.*gate_model\(model\)"):
        MIND(model=model, n_experiences=2, evaluator=None)


# ------------------------------------------------------------- item 6 and 9: the glyph cache
def test_empty_glyph_cache_is_rendered_again_naming_it(tmp_path):
    from avalanche_mind.data import glyphs

    chars = list(glyphs.CHARACTERS[:2])
    kwargs = dict(train_per_class=2, test_per_class=1, seed=0, root=tmp_path)
    first = glyphs.load_glyph_arrays(chars, **kwargs)
    path = glyphs.cache_path(chars, train_per_class=2, test_per_class=1, seed=0, style="default",
                             image_size=32, root=tmp_path)
    path.write_bytes(b"")  # a zero-length cache, as a full disk or a kill before fsync leaves
    with pytest.warns(UserWarning, match=f"glyph cache {path} is unreadable"):
        again = glyphs.load_glyph_arrays(chars, **kwargs)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert path.stat().st_size > 0  # replaced: the next run reads it


def test_unwritable_glyph_cache_folder_still_gives_the_glyphs(tmp_path):
    from avalanche_mind.data import glyphs

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    chars = list(glyphs.CHARACTERS[:2])
    with pytest.warns(UserWarning, match="cannot write the glyph cache.*AVALANCHE_MIND_DATA"):
        arrays = glyphs.load_glyph_arrays(chars, train_per_class=2, test_per_class=1, root=blocker / "sub")
    assert len(arrays["y_train"]) == 4


# ------------------------------------------------------------- item 10: checkpoint leftovers
def test_killed_save_leftovers_removed_and_permissions_follow_umask(tmp_path):
    import os

    from avalanche_mind.io.checkpoint import atomic_torch_save

    path = tmp_path / "run.pt"
    old_style = tmp_path / ".run.pt.k2j3h4.tmp"  # a kill mid-save, before pids were in the name
    dead = tmp_path / ".run.pt.pid999999999.abc.tmp"  # a kill mid-save: no such process
    alive = tmp_path / f".run.pt.pid{os.getpid()}.xyz.tmp"  # a save in progress: kept
    other = tmp_path / ".other.pt.abc.tmp"  # another file's: not ours to remove
    for leftover in (old_style, dead, alive, other):
        leftover.write_bytes(b"partial")
    atomic_torch_save({"x": 1}, path)
    assert not old_style.exists() and not dead.exists()
    assert alive.exists() and other.exists()
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------- items 2, 9 and the report line: the CLI
from avalanche_mind import cli  # noqa: E402
from test_cli import TINY  # noqa: E402

LOUD = [a for a in TINY if a != "--quiet"]


def run_cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("option", ["--results", "--checkpoint"])
def test_unwritable_output_refused_before_training(tmp_path, capsys, monkeypatch, option):
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
def test_bad_options_one_line_exit_2(tmp_path, capsys, argv, message):
    code, out, err = run_cli(["train", *TINY, *argv], capsys)
    assert code == 2
    assert err.startswith("avalanche-mind train: error: ") and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_wandb_dir_unwritable(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli(["train", *TINY, "--wandb", "--wandb-mode", "offline", "--wandb-dir", blocker], capsys)
    assert code == 2 and f"--wandb-dir {blocker} is a file, not a folder" in err


def test_wandb_online_without_a_server_fails_in_seconds_and_names_offline_mode(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    code, out, err = run_cli(["train", *TINY, "--wandb", "--wandb-mode", "online", "--wandb-dir", tmp_path], capsys)
    assert time.monotonic() - start < 60  # wandb's own timeout is about 100 s
    assert code == 2 and "cannot reach http://127.0.0.1:9" in err and "--wandb-mode offline" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(tmp_path, capsys, monkeypatch):
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
    import shlex

    assert lines[1] == "Resume with: " + shlex.join(["avalanche-mind", *argv, "--resume"])
    monkeypatch.setattr(MIND, "train", real_train)
    code, out, err = run_cli(shlex.split(lines[1].split(": ", 1)[1])[1:], capsys)
    assert code == 0, err
    from avalanche_mind.io.checkpoint import read_checkpoint

    assert read_checkpoint(ckpt).n_trained == 3


def test_disk_full_keeps_the_previous_checkpoint_and_says_so(tmp_path, capsys, monkeypatch):
    import errno

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


def test_per_experience_line_averages_over_trained_experiences(tmp_path, capsys):
    code, out, err = run_cli(["train", *LOUD], capsys)
    assert code == 0, err
    first = next(line for line in out.splitlines() if line.startswith("[1/3]"))
    values = dict(cell.split() for cell in first[len("[1/3] "):].split(" (")[0].split(", "))
    assert first.endswith("(on the 1 trained test experience)")
    assert values["TaskId"] == "1.0000" and values["TAg"] == values["TAw"]  # one task: TAg is TAw


def test_importing_the_package_prints_no_qpsolvers_warning():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-W", "default", "-c", "import avalanche_mind.cli, avalanche_mind"],
                            capture_output=True, text=True, check=True)
    assert "qpsolvers" not in result.stderr and "QP solver" not in result.stderr, result.stderr


# ------------------------------------------------------------- items 1 and 9: compare
def test_compare_unwritable_out_refused_before_training(tmp_path, capsys, monkeypatch):
    from avalanche_mind.runner import compare

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(compare, "run", lambda *a, **k: pytest.fail("trained before checking --out"))
    for out in (blocker, blocker / "sub"):
        assert compare.main(["--tiny", "--strategies", "naive", "--out", str(out)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    compare.main(["--tiny", "--strategies", "naive", "--out", str(blocker / "sub")])
    assert capsys.readouterr().err.strip() == (f"error: --out {blocker / 'sub'} cannot be written: {blocker} is a "
                                               "file, not a folder. (Checked before training, so no work is lost.)")


def test_compare_prints_the_table_before_a_failing_write(tmp_path, capsys, monkeypatch):
    import avalanche_mind.runner.report as report
    from avalanche_mind.runner import compare

    def full_disk(result, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_all", full_disk)
    status = compare.main(["--tiny", "--strategies", "naive", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert status == 1
    assert "| Naive (lower bound)" in captured.out  # the table, printed before the write
    message = captured.err.strip()
    assert message.startswith(f"error: could not write the results under {tmp_path / 'out'} (No space left on "
                              "device); every figure is saved in ")
    saved = Path(message.split("every figure is saved in ", 1)[1].split(" instead", 1)[0])
    assert json.loads(saved.read_text())["strategies"]["naive"]["tag_matrix_mean"]
    monkeypatch.undo()  # the fallback is a comparison's folder: --redraw draws its table and plots
    assert message.endswith(f"(its table and plots: compare --redraw {saved.parent})")
    assert compare.main(["--redraw", str(saved.parent)]) == 0
    assert (saved.parent / "accuracy_curves.png").is_file()
    import shutil

    shutil.rmtree(saved.parent)


@pytest.mark.parametrize("assignment, message", [
    ("teacher_epochs=abc", "--set teacher_epochs='abc': teacher_epochs must be an integer (the preset has 1)"),
    ("lr=1e400", "--set lr=inf: lr must be a finite number"),
    ("milestones=1.5", "--set milestones=1.5: milestones must be integers"),
])
def test_compare_bad_set_exits_2_naming_the_field(capsys, assignment, message):
    from avalanche_mind.runner import compare

    assert compare.main(["--tiny", "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message), err
    assert "Traceback" not in err


def test_compare_device_without_gpu_exits_2(capsys, monkeypatch):
    from avalanche_mind.runner import compare

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compare.main(["--tiny", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


# ------------------------------------------------------------- item 7: the classifier is the output layer
class HeadFirst(nn.Module):
    """The output layer is registered before an auxiliary Linear: the last Linear is not the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 10)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        h = self.features(x)
        self.aux(h)
        return self.head(h)


@pytest.mark.parametrize("teacher_epochs", [1, 0])
def test_last_linear_not_the_output_is_detected(class_incremental, teacher_epochs):
    strategy = make_mind(model=HeadFirst(), n_experiences=5, teacher_epochs=teacher_epochs, train_epochs=1)
    with pytest.raises(ValueError, match=r"MIND takes the last nn.Linear registered in the model, 'aux' \(4 -> 3\), "
                                         r"as its classifier, but the model's output \(shape \[32, 10\]\) does not "
                                         r"come from that layer. Register the output layer last"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0


# ------------------------------------------------------------- item 8: Predictor and evaluate
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    from avalanche_mind import cli

    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    assert cli.main(["train", *TINY, "--checkpoint", str(path)]) == 0
    return path


def test_predictor_refuses_nonfinite_inputs_and_a_missing_batch_dimension(saved_run):
    from avalanche_mind.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(saved_run, small_cnn(6, width=6))
    x = torch.rand(4, 3, 12, 12)
    predictor.predict(x)
    x[1, 0, 0, 0] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"inputs hold 2 NaN or infinite value\(s\) \(of 1728\)"):
        predictor.predict(x)
    with pytest.raises(ValueError, match=r"inputs must be a batch with 4 dimensions \(N first\), got one sample of "
                                         r"shape \[3, 12, 12\]: add the batch dimension, e.g. x.unsqueeze\(0\)"):
        predictor.predict(torch.rand(3, 12, 12), task=0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        Predictor.from_checkpoint(saved_run, small_cnn(6, width=6), temperature=float("inf"))


def test_evaluate_on_a_benchmark_with_other_classes_is_refused(saved_run, capsys):
    code, out, err = run_cli(["evaluate", saved_run, "--benchmark-arg", "n_experiences=2", "--benchmark-arg",
                              "classes_per_experience=3", "--benchmark-arg", "image_size=12"], capsys)
    assert code == 2
    assert err.startswith(f"avalanche-mind evaluate: error: benchmark 'toy' does not match {saved_run}: its test "
                          "experience 0 has classes [0, 1, 2], the checkpoint's experience 0 was trained on [0, 1]")
