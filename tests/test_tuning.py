"""The baselines' own hyperparameters: EWC and SI in the runner, the validation split, the search, its record."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.runner import compare, parallel, tuning, validation
from avalanche_mind.runner.baselines import EpochLR, SynapticIntelligenceCopies
from avalanche_mind.runner.loop import run_serial
from avalanche_mind.runner.overrides import check_overrides, with_overrides
from avalanche_mind.runner.presets import BASELINE_FIELDS, PRESETS, Preset, get_preset
from avalanche_mind.runner.strategies import DEFAULT_STRATEGIES, STRATEGIES, RunContext

RECORDS = Path(__file__).resolve().parent.parent / "benchmarks" / "tuning"


def _context(preset, n_experiences=3, num_classes=6):
    return RunContext(preset=preset, n_experiences=n_experiences, num_classes=num_classes, in_channels=3,
                      scenario="class", device="cpu")


def test_ewc_and_si_are_default_strategies():
    """They run in every comparison; test_compare's tiny run checks their figures, table rows and plots."""
    assert {"ewc", "si"} <= set(DEFAULT_STRATEGIES)
    assert (STRATEGIES["ewc"].label, STRATEGIES["si"].label) == ("EWC", "SI")


def test_si_learns_importances_on_the_cpu():
    """Avalanche 0.6.0's SI stores views of the live weights on the CPU: its importances would stay zero."""
    stream = toy_class_incremental(n_experiences=2, classes_per_experience=2, per_class=16, seed=0).train_stream
    strategy = STRATEGIES["si"].build(_context(get_preset("tiny"), 2, 4))
    plugin = next(p for p in strategy.plugins if isinstance(p, SynapticIntelligenceCopies))
    strategy.train(stream[0], eval_streams=[])
    importances = torch.cat([value.data for value in plugin.ewc_data[1].values()])
    assert importances.abs().sum() > 0


def test_validation_split_is_class_stratified_and_disjoint_from_training_and_test():
    benchmark = toy_class_incremental(n_experiences=3, classes_per_experience=2, per_class=20, seed=0)
    split = validation.validation_benchmark(benchmark, fraction=0.2, seed=5)
    test_inputs = torch.stack([x for e in benchmark.test_stream for x, *_ in e.dataset])
    for i, (experience, part, held) in enumerate(zip(benchmark.train_stream, split.train_stream,
                                                      split.test_stream)):
        targets = list(experience.dataset.targets)
        keep, val = validation.split_indices(targets, 0.2, 5 + i)
        assert set(keep).isdisjoint(val) and sorted(keep + val) == list(range(len(targets)))
        assert sorted(targets[j] for j in val) == sorted(c for c in set(targets) for _ in range(4))
        assert len(part.dataset) == len(keep) and len(held.dataset) == len(val)
        for j, (x, y, *_) in zip(val, held.dataset):  # the validation samples are these training samples ...
            assert torch.equal(x, experience.dataset[j][0]) and y == targets[j]
        for x, *_ in held.dataset:  # ... and none of the test stream's
            assert not (test_inputs == x).flatten(1).all(1).any()
    keep, val = validation.split_indices([0, 0, 1], 0.5, 0)  # a class of one sample stays in training
    assert len(val) == 1 and val[0] in (0, 1) and 2 in keep


def test_search_picks_the_best_validation_score_and_writes_the_record(tmp_path):
    scores = {1.0: 0.25, 1e6: 0.75}
    sent = []

    def execute(tasks, log):  # stands for run_serial / --jobs / --ray: one outcome per task, in order
        sent.extend(tasks)
        return [{"tag": scores[task.preset.ewc_lambda], "wall_time_s": 1.5} for task in tasks]

    preset = get_preset("tiny")
    searches = tuning.tune(preset, strategies=["ewc", "naive"], seeds=[0], folder=tmp_path, data_root=None,
                           device="cpu", log=lambda message: None, grids={"ewc": {"ewc_lambda": (1.0, 1e6)}},
                           execute=execute)
    assert [(task.name, task.seed, task.validation) for task in sent] == [("ewc", 0, True)] * 2
    record = json.loads((tmp_path / "tiny.json").read_text())
    entry = record["baselines"]["ewc"]
    assert searches["ewc"] == entry and list(record["baselines"]) == ["ewc"]
    assert entry["chosen"] == {"ewc_lambda": 1e6} and entry["validation_tag"] == 0.75
    assert [(p["values"], p["validation_tag"]) for p in entry["points"]] == [({"ewc_lambda": 1.0}, 0.25),
                                                                             ({"ewc_lambda": 1e6}, 0.75)]
    assert entry["grid"] == {"ewc_lambda": [1.0, 1e6]} and entry["date"] and "commit" in entry
    assert record["preset"] == "tiny" and record["validation"]["fraction"] == tuning.VALIDATION_FRACTION


def test_tune_from_the_command_line_trains_on_the_split_and_keeps_other_searches(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps({"baselines": {"lwf": {"chosen": {"lwf_alpha": 4.0}}}}))
    status = compare.main(["--tiny", "--tune", "--strategies", "si", "--out", str(tmp_path), "--quiet"])
    assert status == 0
    record = json.loads((tmp_path / "tiny.json").read_text())
    assert set(record["baselines"]) == {"lwf", "si"}
    si = record["baselines"]["si"]
    assert len(si["points"]) == len(tuning.GRIDS["si"](get_preset("tiny"))["si_lambda"])
    assert si["validation_tag"] == max(p["validation_tag"] for p in si["points"])
    sizes = record["validation"]
    assert all(v > 0 for v in sizes["validation_sizes"]) and sum(sizes["train_sizes"]) == 3 * 2 * 16 - sum(
        sizes["validation_sizes"])


def test_presets_hold_the_values_their_search_chose():
    records = sorted(RECORDS.glob("*.json"))
    assert "glyphs-cpu.json" in {path.name for path in records}
    for path in records:
        record = json.loads(path.read_text())
        preset = PRESETS[record["preset"]]
        for name, entry in record["baselines"].items():
            for field, value in entry["chosen"].items():
                assert getattr(preset, field) == value, (path.name, name, field)


def test_searched_fields_are_the_baselines_own_and_never_inherited():
    """A preset's baseline fields are its own search's choices, or the untuned defaults: never another's."""
    searched = {field for grid in tuning.GRIDS.values() for field in grid(get_preset("tiny"))}
    assert searched == set(BASELINE_FIELDS)
    chosen = {}
    for path in RECORDS.glob("*.json"):
        record = json.loads(path.read_text())
        for entry in record["baselines"].values():
            chosen.update({(record["preset"], field): value for field, value in entry["chosen"].items()})
    defaults = {f.name: f.default for f in dataclasses.fields(Preset)}
    for name, preset in PRESETS.items():
        for field in BASELINE_FIELDS:
            assert getattr(preset, field) == chosen.get((name, field), defaults[field]), (name, field)


def test_search_gives_the_same_scores_in_worker_processes(tmp_path):
    """--tune --jobs 2: every (point, seed) run in a worker process, the scores those of one process."""
    grids = {"si": {"si_lambda": (1.0, 100.0)}}
    searches = [tuning.tune(get_preset("tiny"), strategies=["si"], seeds=[0, 1], folder=tmp_path / kind,
                            data_root=None, device="cpu", log=lambda message: None, grids=grids, execute=execute)
                for kind, execute in (("serial", run_serial), ("jobs", parallel.in_processes(2, 1)))]
    serial, jobs = ([(p["values"], p["per_seed"]) for p in search["si"]["points"]] for search in searches)
    assert serial == jobs and len(serial) == 2 and all(len(per_seed) == 2 for _, per_seed in serial)


def test_packnet_grid_keeps_the_budget_and_reaches_the_strategy():
    preset = get_preset("glyphs-cpu")
    grid = tuning.GRIDS["packnet"](preset)
    assert grid["packnet_post_prune_epochs"] == (3, 6, 9) and preset.baseline_epochs == 12
    assert grid["packnet_lr"] == (preset.teacher_lr / 2, preset.teacher_lr, preset.teacher_lr * 2)
    tiny = with_overrides(get_preset("tiny"), ["teacher_epochs=3", "train_epochs=2", "packnet_lr=0.02",
                                               "packnet_post_prune_epochs=4"])
    check_overrides(get_preset("tiny"), tiny)
    packnet = STRATEGIES["packnet"].build(_context(tiny))
    assert packnet.train_epochs == 5
    assert [p.post_prune_epochs for p in packnet.plugins if hasattr(p, "post_prune_epochs")] == [4]
    assert [p.lr for p in packnet.plugins if isinstance(p, EpochLR)] == [0.02]
    with pytest.raises(ValueError, match="packnet_lr"):
        check_overrides(get_preset("tiny"), with_overrides(get_preset("tiny"), ["packnet_lr=fast"]))
    with pytest.raises(ValueError, match="post-prune"):
        STRATEGIES["packnet"].build(_context(with_overrides(tiny, ["packnet_post_prune_epochs=5"])))


def test_tune_without_data_or_without_a_tunable_baseline_exits_2(tmp_path, capsys):
    status = compare.main(["--preset", "cifar100", "--data-root", str(tmp_path / "nowhere"), "--tune",
                           "--out", str(tmp_path / "out"), "--set", "benchmark_kwargs.download=False"])
    captured = capsys.readouterr()
    assert status == 2 and "is missing" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()
    assert compare.main(["--tiny", "--tune", "--strategies", "mind", "naive", "--out", str(tmp_path)]) == 2
    assert "--tune searches" in capsys.readouterr().err


def test_comparison_on_the_validation_split_scores_what_the_search_scored(tmp_path):
    """compare --validation: the comparison's runs on --tune's split; a baseline's TAg there is its search score."""
    assert compare.main(["--tiny", "--tune", "--strategies", "si", "--out", str(tmp_path / "tune"), "--quiet"]) == 0
    record = json.loads((tmp_path / "tune" / "tiny.json").read_text())
    point = record["baselines"]["si"]["points"][1]
    out = tmp_path / "compare"
    assert compare.main(["--tiny", "--validation", "--strategies", "si", "mind", "--out", str(out),
                         "--set", f"si_lambda={point['values']['si_lambda']}", "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["evaluated_on"] == "validation split"
    assert result["strategies"]["si"]["runs"][0]["tag"] == point["validation_tag"]
    assert result["stream"]["test_sizes"] == record["validation"]["validation_sizes"]
    assert result["stream"]["train_sizes"] == record["validation"]["train_sizes"]
    assert "validation split (not the test stream)" in (out / "results.md").read_text()
