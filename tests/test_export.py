"""ONNX, torch.export (.pt2) and TorchScript export of a trained MIND checkpoint, checked against the Predictor.

torch.export and TorchScript tests always run; ONNX tests need the ``export`` extra (onnx,
onnxruntime, and onnxscript for torch's default exporter) and are skipped without it. Tests
that load TorchScript on purpose silence torch's deprecation of ``torch.jit.load`` (and only that).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.cli import main as cli_main
from avalanche_mind.cli.export import main
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.export.artefact import (
    ExportError,
    VerificationError,
    export_checkpoint,
    reference,
)
from avalanche_mind.export.formats import read_metadata, runner
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.io.checkpoint import CheckpointError, save_checkpoint
from avalanche_mind.task_id.rules import TASK_INFERENCE_RULES

N_EXP, WIDTH, N_CLASSES, SIZE = 3, 8, 6, 12


def _has(name: str) -> bool:
    try:
        __import__(name)
        return True
    except ImportError:
        return False


needs_onnx = pytest.mark.skipif(not (_has("onnx") and _has("onnxruntime")), reason="onnx/onnxruntime not installed")
needs_dynamo = pytest.mark.skipif(not (_has("onnx") and _has("onnxruntime") and _has("onnxscript")),
                                  reason="onnx/onnxruntime/onnxscript not installed")
# torch 2.14 warns on every torch.jit.load; the TorchScript format is kept, deprecated, while torch ships it.
jit_load_deprecated = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
# (format, ONNX exporter) of every way an artefact can be written
WAYS = [
    pytest.param("torch-export", None, id="torch-export"),
    pytest.param("torchscript", None, id="torchscript", marks=jit_load_deprecated),
    pytest.param("onnx", "legacy", id="onnx-legacy", marks=needs_onnx),
    pytest.param("onnx", "dynamo", id="onnx-dynamo", marks=needs_dynamo),
]
SUFFIX = {"torchscript": ".pt", "torch-export": ".pt2", "onnx": ".onnx"}


def model():
    return small_cnn(N_CLASSES, width=WIDTH)


def _strategy(**overrides):
    torch.manual_seed(0)
    return MIND(model=model(), n_experiences=N_EXP, teacher_epochs=2, train_epochs=2, train_mb_size=16,
                eval_mb_size=64, lr=0.01, teacher_lr=0.01, temperature=2.0, milestones=[], teacher_milestones=[],
                seed=0, evaluator=EvaluationPlugin(*mind_metrics(), loggers=[]), **overrides)


RECORD = {"model": "small_cnn", "model_kwargs": {"width": WIDTH}, "num_classes": N_CLASSES, "in_channels": 3,
          "image_size": SIZE}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MIND run over 3 experiences, its checkpoint, one saved mid-experience, and test inputs."""
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=20,
                                      test_per_class=12, image_size=SIZE, seed=0)
    strategy = _strategy()
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
    folder = tmp_path_factory.mktemp("export")
    path = folder / "mind.pt"
    save_checkpoint(strategy, path, extra={"cli": RECORD})
    strategy.state.bn_snapshots.pop()  # as if saved while the last experience was still training
    middle = folder / "middle.pt"
    save_checkpoint(strategy, middle, extra={"cli": RECORD})
    inputs = torch.stack([e.dataset[i][0] for e in benchmark.test_stream for i in range(len(e.dataset))])
    return path, middle, inputs


def _predictor(path, **kwargs):
    return Predictor.from_checkpoint(path, model(), **kwargs)


def _torch_graph(path, fmt):
    """(graph text, weights) of a torch.export or TorchScript artefact, loaded as a user would."""
    if fmt == "torch-export":
        program = torch.export.load(str(path))
        return str(program.graph), program.state_dict
    loaded = torch.jit.load(str(path))
    return str(loaded.inlined_graph), loaded.state_dict()


@pytest.mark.parametrize("fmt,exporter", WAYS)
def test_one_task_is_a_dense_network_of_its_classes(trained, tmp_path, fmt, exporter):
    path, _, inputs = trained
    out = tmp_path / f"task1{SUFFIX[fmt]}"
    report = export_checkpoint(path, model(), out, format=fmt, task=1, inputs=inputs, exporter=exporter)
    predictor = _predictor(path)
    meta = read_metadata(str(out), fmt)
    assert meta["class_ids"] == predictor.state.slices[1] == [2, 3]
    assert meta["torch_version"] == torch.__version__ and meta["task"] == 1
    assert (meta["opset"] == 18) if fmt == "onnx" else meta["opset"] is None
    run = runner(str(out), fmt)
    for batch in (inputs, inputs[:1], inputs[5:42]):  # the batch dimension is dynamic
        (logits,) = run(batch)
        assert logits.shape == (len(batch), 2)
        ids = torch.tensor(meta["class_ids"])[logits.argmax(1)]
        assert torch.equal(ids, predictor.predict(batch, 1).classes)
        want = F.softmax(predictor.logits(batch, 1)[:, predictor.slices[1]], 1)
        assert (F.softmax(logits, 1) - want).abs().max() <= 1e-5
    assert report.max_probability_difference <= 1e-5
    # Only the classifier rows of task 1's classes are kept; weights of tasks > 1 are zeros in the file.
    fc = predictor.ownership.classifier
    assert report.dropped_weights == (N_CLASSES - 2) * fc.in_features
    assert report.artefact_bytes == out.stat().st_size > 0
    if fmt != "onnx":
        graph, weights = _torch_graph(out, fmt)
        assert "batch_norm" not in graph and "conv" in graph  # each BatchNorm folded into its convolution
        conv = predictor.ownership.layers["4"]
        unused = (conv.owner > 1) | (conv.owner < 0)
        assert unused.any() and (weights["4.weight"][unused] == 0).all()
        assert (weights["4.weight"][~unused] != 0).float().mean() > 0.9
    if fmt == "torch-export":  # a .pt2 keeps its example inputs: zeros, not verification data or its whole batch
        (example,), _ = torch.export.load(str(out)).example_inputs
        assert not example.any() and example.untyped_storage().nbytes() == example.nbytes == 2 * inputs[0].nbytes
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(out)).graph.node}
        assert "BatchNormalization" not in ops and "Conv" in ops


@pytest.mark.parametrize("fmt,exporter", WAYS)
def test_whole_predictor_in_one_graph_matches_the_predictor(trained, tmp_path, fmt, exporter):
    path, _, inputs = trained
    out = tmp_path / f"all{SUFFIX[fmt]}"
    report = export_checkpoint(path, model(), out, format=fmt, task="all", inputs=inputs, exporter=exporter)
    predictor = _predictor(path)
    meta = read_metadata(str(out), fmt)
    assert meta["task"] == "all" and meta["slices"] == predictor.state.slices
    assert meta["task_inference"] == predictor.task_inference
    run = runner(str(out), fmt)
    for batch in (inputs, inputs[:1], inputs[3:20]):
        classes, tasks, probabilities = run(batch)
        want_classes, want_tasks, want_probabilities = reference(predictor, "all", batch)
        assert torch.equal(classes.long(), want_classes) and torch.equal(tasks.long(), want_tasks)
        assert (probabilities - want_probabilities).abs().max() <= 1e-5
        assert torch.allclose(probabilities.sum(1), torch.ones(len(batch)), atol=1e-5)
    assert len(set(reference(predictor, "all", inputs)[1].tolist())) == N_EXP  # every sub-network is exercised
    assert report.tasks_exercised == N_EXP
    if exporter == "dynamo":  # raw weights once plus 1-byte owners, not one copy per task
        assert report.artefact_bytes < 2 * report.dense_float32_bytes + 200_000


def _resnet():
    """Residual additions, strided option-A shortcuts and 2 BatchNorms per block (what gresnet32 has)."""
    from avalanche_mind.core.layers import gate_model
    from avalanche_mind.models import ResNet

    torch.manual_seed(0)
    return gate_model(ResNet(N_CLASSES, blocks_per_stage=1, widths=(4, 8, 8)))


def _with_biases():
    """Biases everywhere, and a BatchNorm1d after a hidden Linear: kept as a BatchNorm with each task's snapshot."""
    from avalanche_mind.core.layers import gate_model

    torch.manual_seed(0)
    return gate_model(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, N_CLASSES)))


@pytest.mark.parametrize("build,convs,batchnorms", [(_resnet, 7, 0), (_with_biases, 1, 1)], ids=["resnet", "biases"])
@pytest.mark.parametrize("fmt,exporter", WAYS)
def test_other_architectures_export_and_match(tmp_path, fmt, exporter, build, convs, batchnorms):
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=8,
                                      test_per_class=4, image_size=8, seed=1)
    strategy = MIND(model=build(), n_experiences=N_EXP, teacher_epochs=1, train_epochs=1, train_mb_size=16,
                    milestones=[], teacher_milestones=[], seed=0, evaluator=EvaluationPlugin(loggers=[]))
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
    path = tmp_path / "other.pt"
    save_checkpoint(strategy, path)
    inputs = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for task in ("all", 2):
        out = tmp_path / f"other_{task}{SUFFIX[fmt]}"
        report = export_checkpoint(path, build(), out, format=fmt, task=task, inputs=inputs, exporter=exporter)
        assert report.max_probability_difference <= 1e-5 and out.is_file()
    if fmt == "onnx":
        import onnx

        ops = [n.op_type for n in onnx.load(str(tmp_path / "other_2.onnx")).graph.node]
        assert ops.count("Conv") == convs and ops.count("BatchNormalization") == batchnorms  # conv BNs folded
    if fmt == "torch-export":
        ops = [str(n.target) for n in torch.export.load(str(tmp_path / "other_2.pt2")).graph.nodes]
        assert ops.count("aten.conv2d.default") == convs
        assert sum("batch_norm" in op for op in ops) == batchnorms


@pytest.mark.parametrize("fmt,exporter", WAYS)
def test_without_weight_sharing_each_task_keeps_only_its_own_weights(trained, tmp_path, fmt, exporter):
    path, _, inputs = trained
    strategy = _strategy(weight_sharing=False)
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=10,
                                      test_per_class=2, image_size=SIZE, seed=0)
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
    alone = tmp_path / "alone.pt"
    save_checkpoint(strategy, alone)
    assert _predictor(alone).weight_sharing is False
    for task in ("all", 1):
        export_checkpoint(alone, model(), tmp_path / f"alone_{task}{SUFFIX[fmt]}", format=fmt, task=task,
                          inputs=inputs, exporter=exporter)
    if fmt != "onnx":
        weights = _torch_graph(tmp_path / f"alone_1{SUFFIX[fmt]}", fmt)[1]["4.weight"]
        owner = _predictor(alone).ownership.layers["4"].owner
        assert (weights[owner != 1] == 0).all() and (weights[owner == 1] != 0).float().mean() > 0.9


def _export_every_rule(trained, tmp_path, fmt, exporter):
    path, _, inputs = trained
    chosen = {}
    for rule in TASK_INFERENCE_RULES:
        out = tmp_path / f"{rule}{SUFFIX[fmt]}"
        export_checkpoint(path, model(), out, format=fmt, task="all", inputs=inputs, task_inference=rule,
                          exporter=exporter)
        tasks = runner(str(out), fmt)(inputs)[1].long()
        assert torch.equal(tasks, _predictor(path, task_inference=rule).predict(inputs).tasks), rule
        chosen[rule] = tasks
    # The rules are really different programs: not every one chooses the same tasks.
    assert len({tuple(t.tolist()) for t in chosen.values()}) > 1


def test_every_task_choice_rule_exports_to_torch_export(trained, tmp_path):
    _export_every_rule(trained, tmp_path, "torch-export", None)


def test_every_task_choice_rule_exports_to_torchscript(trained, tmp_path):
    _export_every_rule(trained, tmp_path, "torchscript", None)


@needs_onnx
def test_every_task_choice_rule_exports_to_onnx(trained, tmp_path):
    _export_every_rule(trained, tmp_path, "onnx", "legacy")


@pytest.mark.parametrize("fmt", ["torch-export", "torchscript"])
def test_an_artefact_that_disagrees_is_deleted(trained, tmp_path, monkeypatch, fmt):
    path, _, inputs = trained
    import avalanche_mind.export.graph as graph
    from avalanche_mind.task_id import scores_with

    # The graph's choice replaced by the least likely task; the Predictor keeps the true one.
    monkeypatch.setattr(graph, "choose_with", lambda *args: (-scores_with(*args)).argmax(dim=1))
    out = tmp_path / f"wrong{SUFFIX[fmt]}"
    with pytest.raises(VerificationError, match=f"the {fmt} file chooses another task .*deleted"):
        export_checkpoint(path, model(), out, format=fmt, task="all", inputs=inputs)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_refusals(trained, tmp_path, monkeypatch):
    path, middle, inputs = trained
    out = tmp_path / "x.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        export_checkpoint(damaged, model(), out, format="torchscript", inputs=inputs)
    with pytest.raises(CheckpointError, match="middle of an experience"):
        export_checkpoint(middle, model(), out, format="torchscript", inputs=inputs)
    with pytest.raises(CheckpointError, match="different model architecture"):
        export_checkpoint(path, small_cnn(N_CLASSES, width=WIDTH + 4), out, format="torchscript", inputs=inputs)
    for task in (N_EXP, -1):
        with pytest.raises(ExportError, match=f"task {task} is out of range.*ids 0..{N_EXP - 1}"):
            export_checkpoint(path, model(), out, format="torchscript", task=task, inputs=inputs)
    import avalanche_mind.export.formats as formats

    monkeypatch.setattr(formats, "_importable", lambda name: name != "onnxruntime")
    with pytest.raises(ExportError, match=r"needs onnxruntime.*pip install -e '\.\[export\]'"):
        export_checkpoint(path, model(), tmp_path / "x.onnx", format="onnx", inputs=inputs)
    assert list(tmp_path.iterdir()) == [damaged]


class BesselJ0(nn.Module):
    """An activation no ONNX opset has."""

    def forward(self, x):
        return torch.special.bessel_j0(x)


@needs_onnx
@pytest.mark.parametrize("exporter", ["legacy", pytest.param("dynamo", marks=needs_dynamo)])
def test_an_unsupported_layer_is_named(trained, tmp_path, exporter):
    path, _, inputs = trained
    odd = model()
    odd[2] = BesselJ0()  # no parameters: the checkpoint still loads into it
    with pytest.raises(ExportError, match=r"unsupported layer '2' \(BesselJ0\).*bessel_j0"):
        export_checkpoint(path, odd, tmp_path / "odd.onnx", format="onnx", inputs=inputs, exporter=exporter)
    assert not (tmp_path / "odd.onnx").exists()


def test_command_line(trained, tmp_path, capsys):
    path, middle, _ = trained
    out = tmp_path / "task0.pt"
    assert main([str(path), "--out", str(out), "--task", "0", "--json", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "verified on 64 inputs" in printed and "classes identical" in printed and "checkpoint" in printed
    assert read_metadata(str(out), "torchscript")["class_ids"] == [0, 1]  # format from the .pt suffix
    assert (tmp_path / "r.json").is_file()
    for argv, message in (([str(path), "--task", "9"], "out of range"),
                          ([str(path), "--task", "two"], "--task must be"),
                          ([str(middle)], "middle of an experience"),
                          ([str(path), "--model-arg", "width=4"], "different model architecture")):
        assert main([*argv, "--out", str(tmp_path / "bad.pt")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "bad.pt").exists()
    # The same through the console command `avalanche-mind export`.
    assert cli_main(["export", str(path), "--out", str(tmp_path / "all.pt"), "--quiet"]) == 0
    assert (tmp_path / "all.pt").is_file() and capsys.readouterr().out == ""
    assert cli_main(["export", str(path), "--task", "9", "--out", str(tmp_path / "bad.pt")]) == 2
    assert "out of range" in capsys.readouterr().err
    # The .pt2 suffix selects torch.export; the file runs with torch alone.
    assert main([str(path), "--out", str(tmp_path / "all.pt2"), "--quiet"]) == 0
    meta = read_metadata(str(tmp_path / "all.pt2"), "torch-export")
    assert meta["exporter"] == "torch.export" and meta["task"] == "all" and meta["class_ids"] == list(range(N_CLASSES))
    extra = {"avalanche_mind.json": ""}  # the same record through torch's own API
    program = torch.export.load(str(tmp_path / "all.pt2"), extra_files=extra)
    assert json.loads(extra["avalanche_mind.json"]) == meta
    classes, tasks, _ = program.module()(torch.randn(3, 3, SIZE, SIZE))
    assert classes.shape == tasks.shape == (3,)


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--format", "--task", "--model", "--model-arg", "--task-inference", "--opset",
                   "onnx", "torch-export", "torchscript", "--benchmark"):
        assert option in text
    assert "torchscript (deprecated" in " ".join(text.split())
    done = subprocess.run([sys.executable, "-m", "avalanche_mind.export", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: avalanche-mind export")
