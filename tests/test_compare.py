"""The comparison runner (benchmarks/compare.py): end to end on the tiny preset, outputs, fast failures."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import compare
from benchmarks.baselines import packnet_backbone, prune_schedule
from benchmarks.presets import PRESETS, get_preset, with_overrides
from benchmarks.report import forgetting

ROOT = Path(__file__).resolve().parent.parent
ALL = list(compare.STRATEGIES)
ISOLATED = tuple(name for name in compare.STRATEGIES if name.startswith("mind") or name == "packnet")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_KEYS = {
    "seed", "tag", "taw", "taskid", "forgetting_tag", "forgetting_taw", "params_model", "params_kept",
    "state_mb", "peak_rss_mb", "train_time_s", "eval_time_s", "wall_time_s", "tag_matrix", "taw_matrix",
    "taskid_matrix", "trained", "curve_tag", "curve_taw", "normalisation", "rules",
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
    assert defaults == ["mind", "mind-paper", "packnet", "lwf", "naive", "joint"]
    assert set(defaults) | set(compare.LADDER) == set(ALL)
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
    for spec in (compare.STRATEGIES[name] for name in ALL):
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
        status = compare.main(["--tiny", "--out", str(tmp_path), "--strategies", *compare.LADDER, "packnet",
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
    _, stdout, result = tiny_run
    preset = get_preset("tiny")
    notes = "\n".join(result["notes"])
    for text in (stdout, notes):
        assert "Budget:" in text
        assert f"{preset.baseline_epochs} epochs per experience" in text
        assert "GroupNorm" in text and "PackNetModel.wrap" in text
        assert "SupervisedTemplate" in text
        assert "Tiny preset" in text
    assert "GroupNorm" in result["strategies"]["packnet"]["normalisation"]
    assert "BatchNorm" in result["strategies"]["mind"]["normalisation"]
    assert "BatchNorm" not in result["strategies"]["packnet"]["normalisation"]


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


def test_presets_are_complete_and_overridable():
    for name in ("cifar100", "tinyimagenet", "core50", "glyphs-cpu", "glyphs-domain-cpu", "tiny"):
        assert name in PRESETS
    cifar = get_preset("cifar100")
    assert (cifar.teacher_epochs, cifar.train_epochs, cifar.temperature) == (50, 50, 6.5)
    assert (cifar.teacher_lr, cifar.lr, cifar.batch_size, cifar.beta) == (0.005, 0.035, 256, 5.0)
    assert cifar.baseline_epochs == 100 and cifar.baseline_milestones == (35, 90)
    changed = with_overrides(cifar, ["temperature=4", "milestones=[10, 20]", "benchmark_kwargs.seed=3"])
    assert changed.temperature == 4.0 and changed.milestones == (10, 20)
    assert changed.benchmark_kwargs["seed"] == 3 and cifar.benchmark_kwargs["seed"] == 0
    assert cifar.capacity == "equal" and with_overrides(cifar, ["capacity=0.05"]).capacity == 0.05
    assert all(preset.notes for preset in PRESETS.values() if preset.name.endswith("cpu"))
    assert not math.isnan(get_preset("glyphs-cpu").temperature)


def test_preset_capacity_reaches_mind():
    preset = with_overrides(get_preset("tiny"), ["capacity=0.25"])
    ctx = compare.RunContext(preset=preset, n_experiences=3, num_classes=6, in_channels=3,
                             scenario="class", device="cpu")
    strategy = compare.STRATEGIES["mind"].build(ctx)
    assert strategy.ownership.capacity == 0.25
    assert compare.STRATEGIES["mind"].build(compare.RunContext(
        preset=get_preset("tiny"), n_experiences=3, num_classes=6, in_channels=3, scenario="class", device="cpu",
    )).ownership.capacity == "equal"
