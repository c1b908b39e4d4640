"""Checkpoint and resume: a run stopped after experience k and resumed equals the uninterrupted run."""
from __future__ import annotations

import os

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import forgetting_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import PAPER_SETTINGS, MIND, mind_metrics, small_cnn
from avalanche_mind.io.checkpoint import (
    CheckpointError,
    CheckpointPlugin,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.core.layers import unpack_owner

N_EXP = 3
TINY = dict(teacher_epochs=2, train_epochs=2, train_mb_size=16, eval_mb_size=64,
            milestones=[1], teacher_milestones=[1], lr=0.01, teacher_lr=0.01)


def build(plugins=(), width=6, n_experiences=N_EXP, **overrides):
    """A fresh benchmark, model and MIND, as a new process would build them."""
    torch.manual_seed(0)
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=20,
                                      test_per_class=10, image_size=12, seed=0)
    strategy = MIND(model=small_cnn(2 * N_EXP, width=width), n_experiences=n_experiences, seed=0,
                    evaluator=EvaluationPlugin(*mind_metrics(), forgetting_metrics(experience=True, stream=True),
                                               loggers=[]),
                    plugins=list(plugins),
                    **{**TINY, **overrides})
    return benchmark, strategy


def run(benchmark, strategy, experiences):
    results = {}
    for experience in experiences:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream)
    return results


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint after two of three experiences, and the strategy that wrote it."""
    path = tmp_path_factory.mktemp("ckpt") / "mind.pt"
    benchmark, strategy = build([CheckpointPlugin(path)])
    run(benchmark, strategy, benchmark.train_stream[:2])
    return path, strategy


# MIND's defaults learn this toy stream almost perfectly in two epochs per phase (4 distinct
# figures): with one epoch their figures vary enough for the equality below to mean something.
@pytest.mark.parametrize("settings", [PAPER_SETTINGS, dict(teacher_epochs=1, train_epochs=1)],
                         ids=["paper", "defaults"])
def test_resume_after_experience_k_equals_uninterrupted_run(tmp_path, settings):
    benchmark, uninterrupted = build(**settings)
    expected = run(benchmark, uninterrupted, benchmark.train_stream)

    path = tmp_path / "mind.pt"
    benchmark, first = build([CheckpointPlugin(path)], **settings)
    run(benchmark, first, benchmark.train_stream[:1])  # stopped after experience 0
    del first

    torch.manual_seed(12345)  # the resuming process starts from other random states
    benchmark, resumed = build(**settings)
    torch.rand(1000)
    assert load_checkpoint(resumed, path).n_trained == 1
    got = run(benchmark, resumed, benchmark.train_stream[1:])

    # Every TAg/TAw/TaskId value and the forgetting (which needs the first accuracies), exactly.
    assert len(expected) == 12 + 3 and got == expected
    assert len(set(expected.values())) > 5  # not a constant the check could not tell apart
    if settings:
        assert expected["StreamForgetting/eval_phase/test_stream"] != 0
    # The task-identification statistics gathered after each experience survive the resume too.
    sums_a, sums_b = uninterrupted.state.score_statistics.sums, resumed.state.score_statistics.sums
    assert sums_a.keys() == sums_b.keys() and all(torch.equal(sums_a[k], sums_b[k]) for k in sums_a)
    for (name, a), (_, b) in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for snap_a, snap_b in zip(uninterrupted.state.bn_snapshots, resumed.state.bn_snapshots):
        assert all(torch.equal(snap_a[k], snap_b[k]) for k in snap_a)
    assert resumed.state.slices == uninterrupted.state.slices
    assert torch.equal(resumed.generator.get_state(), uninterrupted.generator.get_state())


def test_resume_depends_on_the_restored_random_state(saved):
    # The check above could not fail if nothing random happened after a checkpoint:
    # without the saved RNG states, the last experience trains differently.
    path, writer = saved
    results = []
    for restore in (True, False):
        benchmark, strategy = build()
        torch.manual_seed(777)
        load_checkpoint(strategy, path, restore_rng=restore)
        run(benchmark, strategy, benchmark.train_stream[2:])
        results.append(strategy.model.state_dict())
    differs = [not torch.equal(results[0][k], results[1][k]) for k in results[0] if k.endswith("weight")]
    assert any(differs)


def test_checkpoint_holds_only_plain_values_and_is_written_atomically(saved, tmp_path, monkeypatch):
    path, strategy = saved
    payload = torch.load(path, weights_only=True)  # never unpickles code
    body = payload["body"]
    assert payload["format"] == "avalanche-mind-checkpoint"
    assert body["n_trained"] == 2
    assert set(body) >= {"model", "mind_state", "optimizer", "scheduler", "generator", "rng", "hyperparameters"}
    # The ownership map, packed two owner ids per byte, unpacks to the strategy's own.
    owners = {k: v for k, v in strategy.model.state_dict().items() if k.endswith(".owner")}
    assert owners
    for key, owner in owners.items():
        packed = body["model"][key]
        assert packed.dtype == torch.uint8 and packed.numel() == (owner.numel() + 1) // 2
        assert torch.equal(unpack_owner(packed, owner.shape), owner)
    # BatchNorm snapshots: one stacked tensor per entry, one row per experience, equal to the strategy's.
    stacked = body["mind_state"]["bn_snapshots"]
    assert body["mind_state"]["n_bn_snapshots"] == 2 and stacked
    for key, rows in stacked.items():
        for task in range(2):
            assert torch.equal(rows[task], strategy.state.bn_snapshots[task][key].cpu())
    assert body["hyperparameters"]["n_experiences"] == N_EXP
    assert [p.name for p in path.parent.iterdir()] == ["mind.pt"]  # no temporary file left behind

    target = tmp_path / "keep.pt"
    save_checkpoint(strategy, target)
    before = target.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(strategy, target)
    assert target.read_bytes() == before  # the previous checkpoint survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


def test_plugin_refreshes_the_checkpoint_after_evaluation(tmp_path):
    path = tmp_path / "exp{experience}.pt"
    benchmark, strategy = build([CheckpointPlugin(path)])
    strategy.train(benchmark.train_stream[0])
    after_training = read_checkpoint(tmp_path / "exp0.pt").body
    strategy.eval(benchmark.test_stream)  # the metrics (forgetting's first accuracies) now hold state
    after_eval = read_checkpoint(tmp_path / "exp0.pt").body
    assert after_eval["evaluator"] != after_training["evaluator"]
    assert after_eval["evaluator"]["last_metric_results"]
    # Evaluation leaves the random state alone: the refreshed file continues training from the same one.
    assert torch.equal(after_eval["rng"]["torch"], after_training["rng"]["torch"])
    assert torch.equal(after_eval["rng"]["torch"], torch.get_rng_state())


def corrupt_copies(path, tmp_path):
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside a tensor: torch.load itself does not notice
    copies = {
        "truncated": data[: len(data) // 3],
        "flipped": bytes(flipped),
        "garbage": os.urandom(4096),
        "empty": b"",
    }
    out = {}
    for name, content in copies.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(content)
    return out


def test_corrupt_checkpoints_give_a_clear_error(saved, tmp_path):
    path, _ = saved
    for name, bad in corrupt_copies(path, tmp_path).items():
        _, strategy = build()
        before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
        with pytest.raises(CheckpointError, match="corrupt") as info:
            load_checkpoint(strategy, bad)
        assert str(bad) in str(info.value), name
        if name == "flipped":  # a readable file with altered tensor bytes: caught by the digest
            assert "digest" in str(info.value)
        assert all(torch.equal(before[k], v) for k, v in strategy.model.state_dict().items()), name

    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not an avalanche-mind checkpoint"):
        read_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")


class Payload:
    def __reduce__(self):  # what a malicious pickle would do on load
        return (print, ("code ran",))


def test_a_file_holding_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "avalanche-mind-checkpoint", "body": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_mismatched_configuration_or_model_is_refused(saved):
    path, _ = saved
    _, other_n = build(n_experiences=N_EXP + 1)
    with pytest.raises(CheckpointError, match="n_experiences: checkpoint has 3, this one has 4"):
        load_checkpoint(other_n, path)

    _, wider = build(width=8)
    with pytest.raises(CheckpointError, match="different model architecture.*shape"):
        load_checkpoint(wider, path)

    _, other_beta = build(beta=1.0)
    with pytest.raises(CheckpointError, match="beta"):
        load_checkpoint(other_beta, path)
    # Training-only settings may differ on purpose with strict=False; structure may not.
    assert load_checkpoint(other_beta, path, strict=False).n_trained == 2
    _, no_sharing = build(weight_sharing=False)
    with pytest.raises(CheckpointError, match="weight_sharing"):
        load_checkpoint(no_sharing, path, strict=False)


def test_a_resume_with_another_teacher_learning_rate_is_refused(saved):
    # teacher_lr once lived only in a closure and was not compared on resume.
    path, _ = saved
    assert read_checkpoint(path).hyperparameters["teacher_lr"] == TINY["teacher_lr"]
    _, other = build(teacher_lr=0.02)
    with pytest.raises(CheckpointError, match="teacher_lr: checkpoint has 0.01, this one has 0.02"):
        load_checkpoint(other, path)
    assert load_checkpoint(other, path, strict=False).n_trained == 2


def test_state_dict_round_trip_restores_everything_mind_remembers(saved):
    path, _ = saved
    _, source = build()
    load_checkpoint(source, path)
    state = source.state_dict()
    _, target = build()
    target.load_state_dict(state)
    again = target.state_dict()
    assert again["hyperparameters"] == state["hyperparameters"] == source.config.to_dict()
    assert again["n_trained"] == 2 and again["mind_state"]["slices"] == state["mind_state"]["slices"]
    assert all(torch.equal(again["model"][k], v) for k, v in state["model"].items())
    assert torch.equal(again["generator"], state["generator"])
    _, wrong = build(beta=2.0)
    with pytest.raises(CheckpointError, match="beta"):
        wrong.load_state_dict(state)


class _KilledDuringEval(BaseException):
    pass


class _KillEval(SupervisedPlugin):
    """Interrupts the first evaluation half-way, as a SIGKILL after the checkpoint would."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = True

    def after_eval_iteration(self, strategy, **kwargs) -> None:
        if self.armed:
            self.armed = False
            raise _KilledDuringEval()


def test_resume_after_a_kill_during_evaluation_equals_uninterrupted_run(tmp_path):
    benchmark, uninterrupted = build()
    expected = run(benchmark, uninterrupted, benchmark.train_stream)

    path = tmp_path / "mind.pt"
    benchmark, first = build([CheckpointPlugin(path), _KillEval()])
    with pytest.raises(_KilledDuringEval):
        run(benchmark, first, benchmark.train_stream[:1])  # dies in the evaluation after experience 0
    del first

    benchmark, resumed = build()
    checkpoint = load_checkpoint(resumed, path)
    assert checkpoint.n_trained == 1 and checkpoint.evaluation_pending
    resumed.eval(benchmark.test_stream)  # the interrupted evaluation, redone: forgetting needs its accuracies
    got = run(benchmark, resumed, benchmark.train_stream[1:])
    assert got == expected  # every metric, forgetting and per-experience entries included
    for (name, a), (_, b) in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_evaluation_leaves_the_training_random_state_untouched():
    benchmark, strategy = build()
    strategy.train(benchmark.train_stream[0])
    before = torch.get_rng_state()
    strategy.eval(benchmark.test_stream)
    assert torch.equal(torch.get_rng_state(), before)


def test_atomic_save_removes_leftovers_of_killed_saves_and_follows_the_umask(tmp_path):
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
