"""W&B logging, offline (no network): what a run directory holds after a small MIND run."""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin
from PIL import Image

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.logging.accuracy_matrix import forgetting_from_matrix
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.logging.wandb_logger import MINDWandBLogger, add_wandb_arguments, wandb_logger_from_args
from test_cli import TINY, run_cli
from wandb_records import read_offline_run

N_EXP = 3
EPOCHS = 2
EXP = "eval_phase/test_stream/Task000/Exp{:03d}"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    return tmp_path


def tiny_mind(evaluator, plugins=(), verbose=False):
    torch.manual_seed(0)
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=20,
                                      test_per_class=10, image_size=12, seed=0)
    strategy = MIND(model=small_cnn(2 * N_EXP, width=6), n_experiences=N_EXP, teacher_epochs=EPOCHS,
                    train_epochs=EPOCHS, train_mb_size=16, lr=0.01, teacher_lr=0.01, milestones=[1],
                    teacher_milestones=[1], seed=0, evaluator=evaluator, plugins=list(plugins), verbose=verbose)
    return benchmark, strategy


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A 3-experience MIND run logged offline (WANDB_MODE=offline), then read back from disk."""
    root = tmp_path_factory.mktemp("wandb")
    patch = pytest.MonkeyPatch()
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_DIR", str(root))
    patch.setenv("WANDB_SILENT", "true")
    patch.delenv("WANDB_RUN_ID", raising=False)
    try:
        logger = MINDWandBLogger(project="mind-tests", run_name="tiny", tags=["test"],
                                 config={"benchmark": {"name": "toy", "n_experiences": N_EXP}})
        evaluator = EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True),
            loss_metrics(epoch=True),  # Avalanche's own per-epoch loss, to check ours against
            forgetting_metrics(experience=True, stream=True),
            *mind_metrics(),
            loggers=[logger],
        )
        benchmark, strategy = tiny_mind(evaluator)
        evals, teacher_losses = [], []
        for experience in benchmark.train_stream:
            strategy.train(experience)
            teacher_losses += strategy.teacher_plugin.losses
            evals.append(strategy.eval(benchmark.test_stream))
        logger.finish()
    finally:
        patch.undo()
    run = read_offline_run(logger.run_dir)
    return run, logger, strategy, evals, teacher_losses


def column(run, key):
    return [row[key] for row in run.history if key in row]


def test_offline_run_holds_the_configuration(logged_run):
    run, logger, strategy, _, _ = logged_run
    assert run.path.name.startswith("offline-run-") and run.complete
    assert run.config["benchmark"] == {"name": "toy", "n_experiences": N_EXP}
    mind = run.config["mind"]
    assert mind["n_experiences"] == N_EXP and mind["beta"] == 5.0 and mind["teacher_epochs"] == EPOCHS
    assert mind["milestones"] == [1] and mind["distill_loss"] == "js" and mind["lr"] == 0.01
    assert run.config["model"]["gated_layers"] == len(strategy.ownership.layers)


def test_per_experience_metrics_and_forgetting_are_logged(logged_run):
    run, _, _, evals, _ = logged_run
    keys = set(run.keys())
    for j in range(N_EXP):
        for kind in ("TAg", "TAw", "TaskId"):
            assert f"Top1_{kind}_Acc_Exp/{EXP.format(j)}" in keys
    assert "StreamForgetting/eval_phase/test_stream" in keys
    assert f"ExperienceForgetting/{EXP.format(0)}" in keys
    final = f"Top1_TAg_Acc_Exp/{EXP.format(2)}"
    assert column(run, final)[-1] == evals[-1][final]


def test_teacher_and_distillation_losses_are_separate_curves(logged_run):
    run, _, _, _, teacher_losses = logged_run
    assert column(run, "teacher/loss") == teacher_losses  # every teacher epoch of every experience
    assert column(run, "epoch/teacher") == list(range(N_EXP * EPOCHS))
    distill = column(run, "distillation/loss")
    avalanche = column(run, "Loss_Epoch/train_phase/train_stream/Task000")
    assert len(distill) == N_EXP * EPOCHS
    assert distill == pytest.approx(avalanche, rel=1e-6)
    assert column(run, "distillation/lr") == pytest.approx([0.01, 0.005] * N_EXP)  # lr used in each epoch
    assert column(run, "distillation/experience") == [t for t in range(N_EXP) for _ in range(EPOCHS)]


def test_capacity_per_layer(logged_run):
    run, _, strategy, _, _ = logged_run
    final = strategy.ownership.capacity_used()
    for name, used in final.items():
        values = column(run, f"capacity/{name}")
        assert len(values) == N_EXP and values[-1] == used
    total = column(run, "capacity/total")
    assert total == sorted(total) and total[0] > 0 and total[-1] <= 1.0


def test_accuracy_matrix_as_table_and_image(logged_run):
    run, logger, _, evals, _ = logged_run
    tag, taw = logger.accuracy_matrix("TAg"), logger.accuracy_matrix("TAw")
    assert tag.shape == taw.shape == (N_EXP, N_EXP)
    for i, results in enumerate(evals):
        for j in range(N_EXP):
            assert tag[i, j] == results[f"Top1_TAg_Acc_Exp/{EXP.format(j)}"]
            if j <= i:
                assert taw[i, j] == results[f"Top1_TAw_Acc_Exp/{EXP.format(j)}"]
            else:
                assert math.isnan(taw[i, j])  # no sub-network yet: TAw undefined
    # MIND's central guarantee, seen from the logs: a trained sub-network never changes.
    for j in range(N_EXP):
        assert len(set(taw[j:, j].tolist())) == 1
    assert column(run, "forgetting/test/TAw")[-1] == 0
    assert column(run, "forgetting/test/TAg")[-1] == pytest.approx(forgetting_from_matrix(tag))

    assert {"accuracy_matrix/test/table._type", "accuracy_matrix/test/heatmap._type"} <= set(run.keys())
    tables = sorted((run.path / "files").rglob("accuracy_matrix/test/table_*.table.json"),
                    key=lambda p: int(p.name.split("_")[1]))
    images = list((run.path / "files").rglob("accuracy_matrix/test/heatmap_*.png"))
    assert len(tables) == len(images) == N_EXP
    last = json.loads(tables[-1].read_text())
    assert last["columns"] == ["metric", "after_experience"] + [f"exp_{j}" for j in range(N_EXP)]
    rows = {(r[0], r[1]): r[2:] for r in last["data"]}
    for i in range(N_EXP):
        assert rows[("TAg", i)] == tag[i].tolist()
        assert rows[("TAw", i)] == [None if math.isnan(v) else v for v in taw[i]]
    with Image.open(images[0]) as image:
        assert image.width > 300 and image.height > 150


def test_wandb_arguments_and_modes(tmp_path, offline):
    parser = argparse.ArgumentParser()
    add_wandb_arguments(parser)
    assert wandb_logger_from_args(parser.parse_args([])) is None
    args = parser.parse_args(["--wandb", "--wandb-mode", "disabled", "--wandb-project", "p",
                              "--wandb-run-name", "r", "--wandb-tags", "a", "b", "--wandb-dir", str(tmp_path / "d")])
    logger = wandb_logger_from_args(args, config={"x": 1})
    assert logger.init_kwargs["mode"] == "disabled" and logger.init_kwargs["tags"] == ["a", "b"]
    assert logger.init_kwargs["project"] == "p" and logger.init_kwargs["name"] == "r"
    logger.log_single_metric("Top1_Acc_Stream/eval_phase/test_stream/Task000", 0.5, 1)  # a no-op, no error
    logger.finish()
    assert not list((tmp_path / "d").rglob("*.wandb"))  # disabled: nothing written
    with pytest.raises(SystemExit):
        parser.parse_args(["--wandb-mode", "sometimes"])
    with pytest.raises(ValueError, match="mode must be one of"):
        MINDWandBLogger(mode="sometimes")


def test_forgetting_from_matrix():
    nan = float("nan")
    a = np.array([[0.9, nan, nan], [0.7, 0.8, nan], [0.6, 0.8, 0.5]])
    assert forgetting_from_matrix(a) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.8)) / 2)
    assert math.isnan(forgetting_from_matrix(a[:1]))


def test_logger_state_survives_a_checkpoint(logged_run, offline):
    _, logger, _, _, _ = logged_run
    resumed = MINDWandBLogger(mode="disabled")
    resumed.load_state_dict(logger.state_dict())
    for kind in ("TAg", "TAw", "TaskId"):
        np.testing.assert_array_equal(resumed.accuracy_matrix(kind), logger.accuracy_matrix(kind))
    assert resumed.state_dict() == logger.state_dict()
    resumed.finish()


def test_compare_runner_logs_one_offline_run_per_strategy_and_seed(tmp_path, offline):
    from avalanche_mind.runner import compare

    out, wandb_dir = tmp_path / "out", tmp_path / "w"
    status = compare.main(["--tiny", "--strategies", "mind", "naive", "--out", str(out), "--quiet", "--wandb",
                           "--wandb-mode", "offline", "--wandb-dir", str(wandb_dir), "--wandb-run-name", "smoke"])
    assert status == 0
    result = json.loads((out / "results.json").read_text())
    runs = [read_offline_run(d) for d in sorted((wandb_dir / "wandb").glob("offline-run-*"))]
    assert sorted(r.config["method"] for r in runs) == ["mind", "naive"]
    for run in runs:
        name = run.config["method"]
        figures = result["strategies"][name]["runs"][0]
        assert run.complete and run.config["seed"] == 0 and run.config["preset"]["name"] == "tiny"
        assert run.config["benchmark"]["name"] == "toy" and run.config["benchmark"]["n_experiences"] == N_EXP
        kinds = ("TAg", "TAw", "TaskId") if name == "mind" else ("TAg", "TAw")
        for kind in kinds:  # each logged accuracy equals the runner's own matrix
            matrix = figures[f"{kind.lower()}_matrix"]
            for j in range(N_EXP):
                measured = [row[j] for row in matrix if row[j] is not None]  # TAw: once j is trained
                assert column(run, f"Top1_{kind}_Acc_Exp/{EXP.format(j)}") == measured
        keys = set(run.keys())
        assert {"accuracy_matrix/test/table._type", "accuracy_matrix/test/heatmap._type", "forgetting/test/TAg"} <= keys
        assert run.summary["final/tag"] == figures["tag"] and run.summary["final/params_kept"] == figures["params_kept"]
        if name == "mind":
            assert run.config["mind"]["teacher_epochs"] == 1
            assert {"teacher/loss", "distillation/loss", "capacity/total"} <= keys
        else:  # a baseline's training loss is not called distillation
            assert "train/loss" in keys and not any(k.startswith(("teacher/", "distillation/")) for k in keys)


def test_train_refuses_a_wandb_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli(["train", *TINY, "--wandb", "--wandb-mode", "offline", "--wandb-dir", blocker], capsys)
    assert code == 2 and f"--wandb-dir {blocker} is a file, not a folder" in err


def test_online_mode_without_a_server_fails_in_seconds_naming_offline_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    code, out, err = run_cli(["train", *TINY, "--wandb", "--wandb-mode", "online", "--wandb-dir", tmp_path], capsys)
    assert time.monotonic() - start < 60  # wandb's own timeout is about 100 s
    assert code == 2 and "cannot reach http://127.0.0.1:9" in err and "--wandb-mode offline" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
