"""The comparison runner (avalanche_mind.runner, benchmarks/compare.py): end to end on the tiny preset, outputs,
fast failures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avalanche_mind import MIND, gresnet32
from avalanche_mind.runner import compare, session
from avalanche_mind.runner.baselines import EpochLR
from avalanche_mind.runner.overrides import with_overrides
from avalanche_mind.runner.packnet import packnet_backbone, prune_schedule
from avalanche_mind.runner.presets import PRESETS, get_preset
from avalanche_mind.runner.report import forgetting
from avalanche_mind.runner.strategies import LADDER, NEGATIVES, STRATEGIES, RunContext

ROOT = Path(__file__).resolve().parent.parent
ALL = list(STRATEGIES)
ISOLATED = tuple(name for name in STRATEGIES if name.startswith(("mind", "packnet")))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {
    "seed", "tag", "taw", "taskid", "forgetting_tag", "forgetting_taw", "params_model", "params_kept",
    "state_mb", "peak_rss_mb", "train_time_s", "eval_time_s", "wall_time_s", "tag_matrix", "taw_matrix",
    "taskid_matrix", "trained", "curve_tag", "curve_taw", "normalisation", "rules", "inversion",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every strategy on the tiny preset, once for the module; returns (out dir, stdout, result)."""
    out = tmp_path_factory.mktemp("tiny")
    import io
    from contextlib import redirect_stderr, redirect_stdout

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        status = compare.main(["--tiny", "--out", str(out), "--strategies", *ALL])
    assert status == 0, stderr.getvalue()[-3000:]
    result = json.loads((out / "results.json").read_text())
    return out, stdout.getvalue(), result


def test_every_strategy_runs_and_every_output_is_written(tiny_run):
    out, stdout, result = tiny_run
    # By default: MIND (defaults and the paper's), the baselines and the bounds; ablations on request.
    defaults = compare.build_parser().parse_args([]).strategies
    assert defaults == ["mind", "mind-paper", "packnet", "lwf", "ewc", "si", "naive", "joint"]
    assert set(defaults) | set(LADDER) | set(NEGATIVES) == set(ALL)
    assert list(result["strategies"]) == ALL
    for name in ("results.json", "results.csv", "results.md", "accuracy_curves.png",
                 *(f"heatmap_{s}.png" for s in ALL)):
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_MAGIC, name
            assert path.stat().st_size > 2000, f"{name} looks blank"
    # The table is printed and saved, one row per strategy.
    table = (out / "results.md").read_text()
    assert table.strip() in stdout
    for spec in (STRATEGIES[name] for name in ALL):
        assert any(line.startswith(f"| {spec.label} |") for line in table.splitlines()), spec.label
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(ALL)


def test_json_holds_every_figure_and_the_accuracy_matrices(tiny_run):
    _, _, result = tiny_run
    T = result["n_experiences"]
    assert T == 3 and result["scenario"] == "class"
    for key in ("benchmark", "preset", "seeds", "device", "stream", "environment", "notes", "total_time_s"):
        assert key in result, key
    for name, entry in result["strategies"].items():
        run = entry["runs"][0]
        assert RUN_KEYS <= set(run), RUN_KEYS - set(run)
        rows = 1 if name == "joint" else T
        for key in ("tag_matrix", "taw_matrix", "taskid_matrix"):
            assert len(run[key]) == rows and all(len(r) == T for r in run[key]), (name, key)
        for value in [v for r in run["tag_matrix"] for v in r]:
            assert 0.0 <= value <= 1.0
        assert run["tag"] == pytest.approx(sum(run["tag_matrix"][-1]) / T)
        assert run["train_time_s"] > 0 and run["eval_time_s"] > 0 and run["wall_time_s"] >= run["train_time_s"]
        assert run["params_kept"] >= run["params_model"] > 0
        # Task identification exists only where there are sub-networks to choose from.
        assert (run["taskid"] is not None) == (name in ISOLATED), name
        # TAw is defined once an experience has been trained, never before.
        if name != "joint":
            for i, row in enumerate(run["taw_matrix"]):
                assert all(v is not None for v in row[: i + 1]), (name, i)
                if name in ISOLATED:
                    assert all(v is None for v in row[i + 1:]), (name, i)


def test_isolation_methods_never_forget_with_task_labels(tiny_run):
    """Frozen sub-networks (and BN snapshots / GroupNorm): an old experience's TAw accuracy is
    bit-identical after every later experience, for MIND, its variants and PackNet."""
    _, _, result = tiny_run
    for name in ISOLATED:
        run = result["strategies"][name]["runs"][0]
        matrix = run["taw_matrix"]
        for j in range(len(matrix)):
            column = [matrix[i][j] for i in range(j, len(matrix))]
            assert len(set(column)) == 1, (name, j, column)
        assert run["forgetting_taw"] == 0.0


def test_rules_evaluate_the_same_trained_models_under_each_task_choice(tmp_path):
    """``--rules``: the ladder rungs and PackNet, re-evaluated per rule; TAw cannot change, TaskId can."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    rules = ["max_confidence", "zscore", "likelihood_ratio"]
    stdout = io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(io.StringIO()):
        status = compare.main(["--tiny", "--out", str(tmp_path), "--strategies", *LADDER, "packnet",
                               "--rules", *rules])
    assert status == 0
    result = json.loads((tmp_path / "results.json").read_text())
    for name, entry in result["strategies"].items():
        run = entry["runs"][0]
        assert list(run["rules"]) == rules, name
        # The trained rule's figures equal the run's own final figures.
        assert run["rules"]["max_confidence"]["tag"] == pytest.approx(run["tag"]), name
        assert {round(r["taw"], 9) for r in run["rules"].values()} == {round(run["taw"], 9)}, name
        assert set(entry["rules"]["zscore"]) == {"mean", "std"}
    assert "| Task inference |" in stdout.getvalue()
    with redirect_stderr(io.StringIO()) as err:
        assert compare.main(["--tiny", "--rules", "max_softmax"]) == 2
    assert "unknown --rules" in err.getvalue()


def test_parameters_kept_count_teachers_and_old_models(tiny_run):
    _, _, result = tiny_run
    runs = {name: entry["runs"][0] for name, entry in result["strategies"].items()}
    model = runs["naive"]["params_model"]
    assert runs["naive"]["params_kept"] == model
    assert runs["joint"]["params_kept"] == model
    assert runs["lwf"]["params_kept"] == 2 * model  # LwF keeps the previous model
    assert runs["mind"]["params_model"] == model  # same backbone, gated
    assert runs["mind-paper"]["params_kept"] == 2 * model  # a fresh teacher per experience
    assert runs["mind"]["params_kept"] == model  # defaults: self-distillation, the teacher is the model itself
    assert runs["mind-sd"]["params_kept"] == model
    assert runs["mind-packnet-like"]["params_kept"] == model
    # PackNet: BatchNorm's affine terms are gone with GroupNorm(affine=False), nothing else.
    assert runs["packnet"]["params_kept"] == runs["packnet"]["params_model"] < model
    assert runs["mind-sd"]["state_mb"] > runs["naive"]["state_mb"]  # ownership map, snapshots, logits


def test_output_states_budget_and_normalisation(tiny_run):
    """The printed table carries the run's notes: the preset's budget and caveats, each strategy's normalisation."""
    _, stdout, result = tiny_run
    preset = get_preset("tiny")
    assert preset.budget_note() in result["notes"] and set(preset.notes) <= set(result["notes"])
    assert all(note in stdout for note in result["notes"])
    normalisation = {name: entry["normalisation"] for name, entry in result["strategies"].items()}
    assert all(text in " ".join(result["notes"]) for text in normalisation.values())
    assert "GroupNorm" in normalisation["packnet"] and "BatchNorm" not in normalisation["packnet"]
    assert "BatchNorm" in normalisation["mind"]


def test_baselines_get_mind_s_budget():
    """Every baseline trains teacher_epochs + train_epochs epochs per experience with MIND's teacher optimiser,
    its learning rate dropping where MIND's teacher's drops and, shifted, where its distillation's drops."""
    preset = with_overrides(get_preset("tiny"), ["teacher_epochs=3", "train_epochs=2", "teacher_milestones=1",
                                                 "milestones=1"])
    ctx = RunContext(preset=preset, n_experiences=3, num_classes=6, in_channels=3, scenario="class", device="cpu")
    lr, gamma = preset.teacher_lr, preset.lr_gamma
    for name in ("packnet", "lwf", "ewc", "si", "naive", "joint"):
        strategy = STRATEGIES[name].build(ctx)
        assert strategy.train_epochs == 5, name
        schedule = next(p for p in strategy.plugins if isinstance(p, EpochLR))
        rates = []
        for epoch in range(strategy.train_epochs):
            strategy.clock.train_exp_epochs = epoch
            schedule.before_training_epoch(strategy)
            rates.append(strategy.optimizer.param_groups[0]["lr"])
        assert rates == pytest.approx([lr, lr * gamma, lr * gamma, lr * gamma, lr * gamma ** 2]), name
    packnet = STRATEGIES["packnet"].build(ctx)
    assert [p.post_prune_epochs for p in packnet.plugins if hasattr(p, "post_prune_epochs")] == [2]


def test_missing_data_stops_fast_with_the_data_modules_message(tmp_path, capsys):
    start = time.perf_counter()
    status = compare.main([
        "--preset", "cifar100", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
        "--set", "benchmark_kwargs.download=False",
    ])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert status == 2
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert "CIFAR-100" in captured.err and "cifar-100-python" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists()


def test_script_exits_2_without_a_traceback(tmp_path):
    """The same through ``python benchmarks/compare.py``, as a user runs it (imports dominate its time)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--preset", "cifar100",
         "--data-root", str(tmp_path / "nowhere"), "--set", "benchmark_kwargs.download=False"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "cifar-100-python" in proc.stderr


def test_bad_arguments_exit_2_with_a_message(capsys):
    assert compare.main(["--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert compare.main(["--tiny", "--set", "no_such_field=1"]) == 2
    assert "unknown preset field" in capsys.readouterr().err
    assert compare.main(["--tiny", "--jobs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --jobs must be >= 1"


# ---------------------------------------------------------------- pieces


def test_prune_schedule_gives_every_experience_an_equal_share():
    for n in (1, 3, 10):
        free, shares = 1.0, []
        for proportion in prune_schedule(n):
            shares.append(free * (1 - proportion))
            free *= proportion
        assert shares == pytest.approx([1 / n] * n)
        assert free == pytest.approx(0.0)


def test_packnet_backbone_replaces_batchnorm_and_keeps_per_task_classifier_rows():
    from torch import nn

    model = packnet_backbone("resnet", 10, 3, groups=8, prune_classifier=False, blocks_per_stage=1)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(not m.affine for m in norms)
    assert type(model.wrappee.fc) is nn.Linear  # not wrapped: each task owns its classes' rows
    pruned = packnet_backbone("resnet", 10, 3, groups=8, prune_classifier=True, blocks_per_stage=1)
    assert type(pruned.wrappee.fc) is not nn.Linear


def test_forgetting_is_best_earlier_minus_final():
    matrix = [[0.9, None, None], [0.5, 0.8, None], [0.6, 0.4, 0.7]]
    assert forgetting(matrix) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.4)) / 2)
    assert forgetting([[0.5, 0.5]]) is None


def test_paper_preset_runs_mind_s_defaults_and_presets_are_overridable():
    for name in ("cifar100", "tinyimagenet", "core50", "glyphs-cpu", "glyphs-domain-cpu", "tiny"):
        assert name in PRESETS
    # CIFAR-100/10 with the paper's settings is MIND's defaults: its MIND row is MIND without any keyword.
    cifar = get_preset("cifar100")
    ctx = RunContext(preset=cifar, n_experiences=10, num_classes=100, in_channels=3, scenario="class", device="cpu")
    assert STRATEGIES["mind"].build(ctx).config == MIND(model=gresnet32(100), n_experiences=10).config
    changed = with_overrides(cifar, ["temperature=4", "milestones=[10, 20]", "benchmark_kwargs.seed=3"])
    assert changed.temperature == 4.0 and changed.milestones == (10, 20)
    assert changed.benchmark_kwargs["seed"] == 3 and cifar.benchmark_kwargs["seed"] == 0
    assert with_overrides(cifar, ["capacity=0.05"]).capacity == 0.05
    assert all(preset.notes for preset in PRESETS.values() if preset.name.endswith("cpu"))


def test_preset_capacity_reaches_mind():
    preset = with_overrides(get_preset("tiny"), ["capacity=0.25"])
    ctx = RunContext(preset=preset, n_experiences=3, num_classes=6, in_channels=3,
                             scenario="class", device="cpu")
    strategy = STRATEGIES["mind"].build(ctx)
    assert strategy.ownership.capacity == 0.25
    assert STRATEGIES["mind"].build(RunContext(
        preset=get_preset("tiny"), n_experiences=3, num_classes=6, in_channels=3, scenario="class", device="cpu",
    )).ownership.capacity == "equal"


def test_redraw_writes_the_table_and_plots_again_from_results_json(tiny_run, tmp_path, capsys):
    """``--redraw DIR``: no training; the table, CSV and plots come back from results.json alone."""
    import shutil

    out, _, _ = tiny_run
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(out / "results.json", folder / "results.json")
    assert compare.main(["--redraw", str(folder)]) == 0
    assert (folder / "results.md").read_text() == (out / "results.md").read_text()
    assert (folder / "results.csv").read_text() == (out / "results.csv").read_text()
    assert (folder / "accuracy_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert (folder / "results.md").read_text().strip() in capsys.readouterr().out
    assert compare.main(["--redraw", str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_curves_show_the_spread_over_seeds(tmp_path):
    """With several seeds each strategy's curve is the mean with a band of one standard deviation."""
    from matplotlib.image import imread

    from avalanche_mind.runner import report

    assert report._spread([[0.2, 0.4], [0.4, 0.4]]) == [pytest.approx(0.1414213562), 0.0]
    assert report._spread([[0.2, None]]) == [None, None]

    def result(second_seed):
        runs = [{"curve_tag": [0.9, 0.5, 0.4], "curve_taw": [0.9, 0.8, 0.8]},
                {"curve_tag": second_seed, "curve_taw": [0.9, 0.8, 0.8]}]
        mean = [sum(v) / 2 for v in zip(runs[0]["curve_tag"], runs[1]["curve_tag"])]
        return {"n_experiences": 3, "seeds": [0, 1], "preset": {"description": "spread"},
                "strategies": {"mind": {"label": "MIND", "runs": runs, "curves": {
                    "trained": [1, 2, 3], "curve_tag": mean, "curve_taw": [0.9, 0.8, 0.8]}}}}

    same, spread = tmp_path / "same.png", tmp_path / "spread.png"
    report.plot_curves(result([0.9, 0.5, 0.4]), same)
    report.plot_curves(result([0.9, 0.3, 0.6]), spread)  # the same mean curve, seeds 20 points apart
    changed = (abs(imread(same) - imread(spread)).sum(axis=-1) > 0.05).sum()
    assert changed > 500, changed  # the band's pixels (the mean line is the same in both)


def test_domain_toy_benchmark_runs_every_isolation_method_and_baseline(tmp_path):
    """tiny-domain: its experiences carry task label 0 (PackNet reads it) and every figure is measured."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()) as err:
        status = compare.main(["--preset", "tiny-domain", "--out", str(tmp_path), "--strategies",
                               "mind", "packnet", "naive"])
    assert status == 0, err.getvalue()[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert list(result["strategies"]) == ["mind", "packnet", "naive"]
    for name, entry in result["strategies"].items():
        assert entry["mean"]["tag"] is not None and entry["mean"]["taw"] is not None, name


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(session, "run", lambda *a, **k: pytest.fail("trained before checking --out"))
    for out in (blocker, blocker / "sub"):
        assert compare.main(["--tiny", "--strategies", "naive", "--out", str(out)]) == 2
        assert "Traceback" not in capsys.readouterr().err
    compare.main(["--tiny", "--strategies", "naive", "--out", str(blocker / "sub")])
    assert capsys.readouterr().err.strip() == (f"error: --out {blocker / 'sub'} cannot be written: {blocker} is a "
                                               "file, not a folder. (Checked before training, so no work is lost.)")


@pytest.mark.parametrize("assignment, message", [
    ("teacher_epochs=abc", "--set teacher_epochs='abc': teacher_epochs must be an integer >= 0, got 'abc' "
                           "(the preset has 1)"),
    ("lr=1e400", "--set lr=inf: lr must be finite, got inf (the preset has 0.01)"),
    ("milestones=1.5", "--set milestones=1.5: milestones must be a list of integer epochs"),
    ("batch_size=0", "--set train_mb_size=0: train_mb_size must be an integer >= 1, got 0 (the preset has 16)"),
])
def test_a_bad_set_value_exits_2_naming_the_field(capsys, assignment, message):
    assert compare.main(["--tiny", "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message), err
    assert "Traceback" not in err


def test_device_cuda_without_a_gpu_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compare.main(["--tiny", "--device", "cuda"]) == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
