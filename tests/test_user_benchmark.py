"""``--benchmark package.module:function``: a user's own Avalanche benchmark in the runner and the CLI.

The user's module is written to a temporary folder put on ``sys.path``; it builds tiny
benchmarks the common Avalanche ways, and every strategy kind of the runner (MIND, PackNet,
single-head baselines) trains on each of them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import textwrap

import pytest

from avalanche_mind import cli
from avalanche_mind.data.user import UserBenchmarkError, load_user_benchmark
from avalanche_mind.runner import compare, loop
from avalanche_mind.runner.names import STRATEGY_NAMES
from avalanche_mind.runner.presets import get_preset

USER_MODULE = textwrap.dedent('''
    """A user's benchmarks: 3 experiences of 8x8 images, built the common Avalanche ways."""
    import torch
    from torch.utils.data import TensorDataset
    from avalanche.benchmarks import (benchmark_from_datasets, class_incremental_benchmark, nc_benchmark,
                                      ni_benchmark, with_classes_timeline, with_task_labels)
    from avalanche.benchmarks.utils import as_classification_dataset
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as task_dataset)

    NOT_CALLABLE = 3


    class Images(TensorDataset):
        """Tensors with the ``targets`` Avalanche reads."""

        def __init__(self, x, y):
            super().__init__(x, y)
            self.targets = y.tolist()


    def _tensors(classes, seed, per_class=6, shift=0.0):
        g = torch.Generator().manual_seed(seed)
        y = torch.tensor(list(classes)).repeat_interleave(per_class)
        return torch.randn(len(y), 3, 8, 8, generator=g) * 0.5 + y.view(-1, 1, 1, 1) + shift, y


    def nc(seed=0):
        return nc_benchmark(Images(*_tensors(range(6), seed)), Images(*_tensors(range(6), seed + 1)),
                            n_experiences=3, task_labels=False, seed=seed)


    def ni():
        return ni_benchmark(Images(*_tensors(range(4), 0)), Images(*_tensors(range(4), 1)), n_experiences=3,
                            seed=0, balance_experiences=True)


    def class_incremental():
        data = {"train": as_classification_dataset(Images(*_tensors(range(6), 0))),
                "test": as_classification_dataset(Images(*_tensors(range(6), 1)))}
        return class_incremental_benchmark(data, num_experiences=3, seed=0)


    def from_datasets(domain=False, timeline=False, task_labels=False):
        streams = {"train": [], "test": []}
        for e in range(3):
            for split, seed in (("train", e), ("test", 10 + e)):
                x, y = _tensors(range(4) if domain else (2 * e, 2 * e + 1), seed, shift=e if domain else 0.0)
                streams[split].append(task_dataset(x, y, task_labels=0 if domain else e) if task_labels
                                      else as_classification_dataset(Images(x, y)))
        benchmark = benchmark_from_datasets(**streams)
        if timeline:
            benchmark = with_classes_timeline(benchmark)
        return with_task_labels(benchmark) if task_labels else benchmark


    def returns_list():
        return [1, 2, 3]


    def raises():
        raise RuntimeError("no data today")


    def vectors():
        x, y = torch.randn(12, 5), torch.arange(12) % 2
        return nc_benchmark(Images(x, y), Images(x, y), n_experiences=2, task_labels=False, seed=0)
''')

KINDS = {
    "nc_benchmark": ("nc", {}),
    "ni_benchmark": ("ni", {}),
    "class_incremental_benchmark": ("class_incremental", {}),
    **{f"from_datasets-{'domain' if domain else 'class'}{'-timeline' if timeline else ''}"
       f"{'-task_labels' if task_labels else ''}": ("from_datasets", dict(domain=domain, timeline=timeline,
                                                                         task_labels=task_labels))
       for domain in (False, True) for timeline in (False, True) for task_labels in (False, True)},
}
"""Benchmark kind -> (function of the user's module, its keyword arguments)."""
STRATEGIES = ("mind", "packnet", "lwf", "naive")


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    """``mybench`` (and ``mybench_broken``, which fails at import) importable from a temporary folder."""
    folder = tmp_path_factory.mktemp("user")
    (folder / "mybench.py").write_text(USER_MODULE)
    (folder / "mybench_broken.py").write_text("import torch\nVALUE = 1 / 0\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in ("mybench", "mybench_broken"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("kind, strategy", [(k, s) for k in KINDS for s in STRATEGIES])
def test_every_strategy_trains_on_every_kind_of_avalanche_benchmark(user_module, kind, strategy):
    function, kwargs = KINDS[kind]
    preset = dataclasses.replace(get_preset("tiny"), benchmark=f"mybench:{function}", benchmark_kwargs=kwargs)
    _, stream = loop.loaded(preset, None)
    assert stream["n_experiences"] == 3 and stream["in_channels"] == 3
    assert stream["scenario"] == ("domain" if kind == "ni_benchmark" or "domain" in kind else "class")
    run = loop.run_task(loop.RunTask(strategy, 0, preset, None, "cpu"), log=lambda message: None)
    assert run["tag"] is not None and len(run["tag_matrix"]) == 3


@pytest.mark.parametrize("strategy", [s for s in STRATEGY_NAMES if s not in STRATEGIES])
def test_every_other_strategy_trains_on_the_barest_benchmark(user_module, strategy):
    """benchmark_from_datasets without classes timeline or task labels, domain-incremental: what Avalanche's
    own strategies need is the runner's to add."""
    preset = dataclasses.replace(get_preset("tiny"), benchmark="mybench:from_datasets",
                                 benchmark_kwargs=dict(domain=True))
    run = loop.run_task(loop.RunTask(strategy, 0, preset, None, "cpu"), log=lambda message: None)
    assert run["tag"] is not None


def test_compare_runs_a_user_benchmark_end_to_end(user_module, tmp_path, capsys):
    status = compare.main(["--tiny", "--benchmark", "mybench:from_datasets", "--set",
                           "benchmark_kwargs.domain=True", "--set", "benchmark_kwargs.task_labels=True",
                           "--strategies", "mind", "packnet", "--jobs", "1", "--quiet", "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["benchmark"] == "mybench:from_datasets" and result["scenario"] == "domain"
    assert set(result["strategies"]) == {"mind", "packnet"}


def test_train_and_evaluate_take_a_user_benchmark(user_module, tmp_path, capsys):
    checkpoint = tmp_path / "mind.pt"
    argv = ["--benchmark", "mybench:nc", "--benchmark-arg", "seed=1", "--model", "small_cnn", "--model-arg",
            "width=4", "--teacher-epochs", "1", "--epochs", "1", "--batch-size", "16", "--quiet"]
    assert cli.main(["train", *argv, "--checkpoint", str(checkpoint)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("final: TAg")
    assert cli.main(["evaluate", str(checkpoint), "--quiet"]) == 0, capsys.readouterr().err  # the recorded spec
    assert capsys.readouterr().out.startswith("all: TAg")


BAD_SPECS = {
    "nosuch_module_q:make": "no module named 'nosuch_module_q'",
    "mybench_broken:make": "importing mybench_broken failed: ZeroDivisionError: division by zero",
    "mybench:missing": "module mybench has no attribute 'missing'",
    "mybench:NOT_CALLABLE": "NOT_CALLABLE is not a function (type int)",
    "mybench:returns_list": "returns_list() returned a value of type list, not an Avalanche benchmark",
    "mybench:raises": "raises() raised RuntimeError: no data today",
    "mybench:vectors": "inputs must be image tensors (channels, height, width), the first training input is [5]",
    "mybench:": "is neither a built-in name nor package.module:function",
}


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_a_bad_spec_is_one_line_naming_the_spec_and_the_cause(user_module, tmp_path, capsys, spec):
    assert compare.main(["--tiny", "--benchmark", spec, "--strategies", "naive", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert BAD_SPECS[spec] in err and repr(spec) in err
    assert cli.main(["train", "--benchmark", spec, "--quiet", "--results", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("avalanche-mind train: error: ")
    assert BAD_SPECS[spec] in err


def test_the_library_raises_a_value_error_naming_the_spec(user_module):
    with pytest.raises(UserBenchmarkError, match="mybench:missing"):
        load_user_benchmark("mybench:missing")
    assert isinstance(UserBenchmarkError("x"), ValueError)  # the CLI's one-line user errors
