"""Export a trained MIND checkpoint to ONNX, torch.export or TorchScript, verified against the :class:`Predictor`.

::

    python -m avalanche_mind.export runs/glyphs.pt --task all --out glyphs.onnx
    python -m avalanche_mind.export runs/glyphs.pt --task all --out glyphs.pt2    # torch.export
    python -m avalanche_mind.export runs/glyphs.pt --task 2 --format torchscript --out task2.pt

``--task T``: sub-network T as a plain dense network (input -> logits of T's
classes, class ids in the metadata). ``--task all``: every sub-network and the
checkpoint's task choice in one graph (input -> class id, chosen task,
probabilities). The artefact is written beside ``--out`` under a temporary name,
run back (ONNX Runtime, ``torch.export.load`` or ``torch.jit.load``) and compared
with the Predictor on a batch: classes must be identical and probabilities within
1e-5, or the file is deleted and the reason given. Why a checked export: a silent
difference (a BatchNorm snapshot not folded, a task-choice constant off) would only
show as lower accuracy in production.
"""
from __future__ import annotations

import gzip
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind.export.formats import (
    DEFAULT_OPSET,
    FORMATS,
    find_unsupported_layer,
    first_line,
    read_metadata,
    require_onnx,
    runner,
    write_onnx,
    write_torch_export,
    write_torchscript,
)
from avalanche_mind.export.graph import ExportError, TaskAgnosticModule, check_supported, single_task_module
from avalanche_mind.io.files import usual_mode

PROBABILITY_TOLERANCE = 1e-5
TORCH_EXPORTERS = {"torch-export": "torch.export", "torchscript": "torch.jit.trace"}
EXPORT_FORMAT = "avalanche-mind-export"


class VerificationError(ExportError):
    """The written artefact does not reproduce the Predictor; it has been deleted."""


@dataclass
class ExportReport:
    """What was written, how it compares with the Predictor, and what it weighs."""

    path: str
    format: str
    task: Union[int, str]
    task_inference: str
    exporter: str
    opset: Optional[int]
    verified_inputs: int
    max_probability_difference: float
    tasks_exercised: int
    """Distinct tasks the Predictor chose on the verification inputs (``all``; 1 for a single task)."""
    artefact_bytes: int
    artefact_gzip_bytes: int
    checkpoint_bytes: int
    dense_float32_bytes: int
    """Every weight of the model once, in float32: what a plain dense copy of the network holds."""
    weights_in_artefact: int
    subnetwork_weights: int
    """Weights of the exported sub-network(s) that are not zero by ownership (masked ones are stored as zeros)."""
    dropped_weights: int
    """Weights of the model left out of the artefact (classifier rows of other tasks' classes)."""
    metadata: Dict[str, object] = field(default_factory=dict)

    def lines(self) -> List[str]:
        mib = lambda n: f"{n / 2**20:.3f} MiB"  # noqa: E731
        return [
            f"wrote {self.path} ({self.format}, task {self.task}"
            + (f", task choice {self.task_inference})" if self.task == "all" else ")"),
            f"verified on {self.verified_inputs} inputs against the Predictor"
            + (f" ({self.tasks_exercised} of {self.metadata.get('n_tasks')} tasks chosen)" if self.task == "all" else "")
            + ": classes identical, "
            f"max |probability difference| {self.max_probability_difference:.2e} (tolerance {PROBABILITY_TOLERANCE:g})",
            f"size: artefact {mib(self.artefact_bytes)} (gzip {mib(self.artefact_gzip_bytes)}), checkpoint "
            f"{mib(self.checkpoint_bytes)}, dense float32 weights {mib(self.dense_float32_bytes)}",
            f"weights: {self.weights_in_artefact} stored, {self.subnetwork_weights} used by the sub-network(s), "
            f"{self.dropped_weights} dropped (classifier rows of other tasks)",
        ]


def _weights(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters()) + sum(
        b.numel() for n, b in module.named_buffers() if b.is_floating_point() and not n.endswith("mask"))


def _gzip_size(path: str) -> int:
    with open(path, "rb") as fh:
        return len(gzip.compress(fh.read(), 6))


def _check_task(task, n_tasks: int) -> Union[int, str]:
    if task == "all":
        return task
    try:
        value = int(task)
    except (TypeError, ValueError):
        raise ExportError(f"task must be 'all' or an integer, got {task!r}") from None
    if not 0 <= value < n_tasks:
        raise ExportError(f"task {value} is out of range: the checkpoint has {n_tasks} trained task(s), "
                          f"ids 0..{n_tasks - 1} (or 'all')")
    return value


def export_checkpoint(
    checkpoint: Union[str, os.PathLike],
    model: nn.Module,
    out: Union[str, os.PathLike],
    *,
    format: str = "onnx",  # noqa: A002 - the option's name
    task: Union[int, str] = "all",
    input_shape: Optional[Sequence[int]] = None,
    inputs: Optional[Tensor] = None,
    task_inference: Optional[str] = None,
    temperature: Optional[float] = None,
    opset: int = DEFAULT_OPSET,
    exporter: Optional[str] = None,
    verify_batch: int = 64,
    seed: int = 0,
) -> ExportReport:
    """Export ``checkpoint`` (built into ``model``, as for :meth:`Predictor.from_checkpoint`) to ``out``.

    ``inputs``: a batch to verify with (else ``verify_batch`` standard-normal inputs of
    ``input_shape``, e.g. ``(3, 32, 32)``). Raises :class:`ExportError` (a ValueError) for
    what cannot be exported, :class:`~avalanche_mind.io.checkpoint.CheckpointError` for an
    unusable checkpoint and :class:`VerificationError` when the artefact disagrees (it is
    then deleted).
    """
    from avalanche_mind.inference.predictor import Predictor

    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; use one of {list(FORMATS)}")
    exporter = require_onnx(exporter) if format == "onnx" else TORCH_EXPORTERS[format]
    predictor = Predictor.from_checkpoint(checkpoint, model, temperature=temperature, task_inference=task_inference)
    check_supported(predictor.model)
    task = _check_task(task, predictor.n_tasks)
    if inputs is None:
        if input_shape is None:
            raise ExportError("give input_shape (e.g. 3,32,32) or a batch of inputs to export and verify with")
        generator = torch.Generator().manual_seed(seed)
        inputs = torch.randn((max(int(verify_batch), 2), *map(int, input_shape)), generator=generator)
    inputs = inputs.detach().float().cpu()
    if inputs.shape[0] < 2:
        raise ExportError("verification needs at least 2 inputs")
    state, classifier = predictor.state, predictor.ownership.classifier_name
    num_classes = predictor.ownership.classifier.out_features
    if task == "all":
        # Compact (weights once, each task's masked weights computed in the graph) only for ONNX: ONNX Runtime
        # folds them at load, while a torch.export program run eagerly would recompute them on every call
        # (3x slower at batch 1 on ResNet-32/10 tasks); torch.jit.trace refuses the compact graph.
        module = TaskAgnosticModule(predictor.model, classifier, state.bn_snapshots, predictor.weight_sharing,
                                    state.slices, predictor.temperature, predictor.task_inference,
                                    state.score_statistics, num_classes, compact=exporter == "dynamo")
        outputs = ["class_id", "task", "probabilities"]
    else:
        module = single_task_module(predictor.model, classifier, state.bn_snapshots, predictor.weight_sharing,
                                    task, state.slices[task])
        outputs = ["logits"]
    module.eval()
    metadata = {
        "format": EXPORT_FORMAT, "version": 1, "task": task if task == "all" else int(task),
        "outputs": outputs, "input_shape": list(inputs.shape[1:]), "n_tasks": predictor.n_tasks,
        "class_ids": list(state.slices[task]) if task != "all" else list(range(num_classes)),
        "slices": [list(s) for s in state.slices], "experience_ids": list(state.experience_ids),
        "task_inference": predictor.task_inference, "temperature": predictor.temperature,
        "weight_sharing": predictor.weight_sharing, "opset": opset if format == "onnx" else None,
        "exporter": exporter, "torch_version": torch.__version__, "checkpoint": Path(checkpoint).name,
    }
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file path")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        example = inputs[:2]
        try:
            if format == "onnx":
                write_onnx(module, example, tmp, outputs, metadata, opset, exporter)
            elif format == "torch-export":
                write_torch_export(module, example, tmp, metadata)
            else:
                write_torchscript(module, example, tmp, metadata)
        except ExportError:
            raise
        except Exception as error:  # noqa: BLE001 - turned into a message that names the layer
            body = single_task_module(predictor.model, classifier, state.bn_snapshots, predictor.weight_sharing,
                                      0, state.slices[0])
            culprit = find_unsupported_layer(body, example, format, exporter, opset)
            if culprit is not None:
                raise ExportError(f"unsupported layer {culprit[0]!r} ({culprit[1]}) cannot be exported to {format}: "
                                  f"{culprit[2]}") from error
            raise ExportError(f"the {format} export failed: {first_line(error)}") from error
        difference, exercised = verify(tmp, format, predictor, task, inputs)
        os.chmod(tmp, usual_mode())  # as checkpoints get: not mkstemp's private 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    stored = _weights(module)
    dense = sum(v.numel() for v in predictor.model.state_dict().values() if v.is_floating_point())
    used = sum(int(predictor.ownership.subnetwork_selection(layer, predictor.n_tasks - 1 if task == "all" else task,
                                                            predictor.weight_sharing).sum())
               for layer in predictor.ownership.layers.values())
    fc = predictor.ownership.classifier
    dropped = 0 if task == "all" else (fc.out_features - len(state.slices[task])) * fc.in_features
    return ExportReport(
        path=str(out), format=format, task=task, task_inference=predictor.task_inference, exporter=exporter,
        opset=metadata["opset"], verified_inputs=int(inputs.shape[0]), max_probability_difference=difference,
        tasks_exercised=exercised,
        artefact_bytes=out.stat().st_size, artefact_gzip_bytes=_gzip_size(str(out)),
        checkpoint_bytes=Path(checkpoint).stat().st_size, dense_float32_bytes=4 * dense,
        weights_in_artefact=stored, subnetwork_weights=used, dropped_weights=dropped, metadata=metadata,
    )


@torch.no_grad()
def reference(predictor, task: Union[int, str], x: Tensor):
    """The Predictor's classes and probabilities (full width for ``all``, the slice's for a task)."""
    if task == "all":
        out = predictor.predict(x)
        probabilities = torch.zeros(x.shape[0], predictor.ownership.classifier.out_features)
        for t in out.tasks.unique().tolist():
            rows = out.tasks == t
            s = predictor.slices[t]
            probabilities[rows.nonzero()[:, 0][:, None], s[None, :]] = F.softmax(predictor.logits(x[rows], t)[:, s], 1)
        return out.classes, out.tasks, probabilities
    s = predictor.slices[task]
    return predictor.predict(x, task).classes, None, F.softmax(predictor.logits(x, task)[:, s], dim=1)


def verify(path: str, fmt: str, predictor, task: Union[int, str], inputs: Tensor) -> Tuple[float, int]:
    """Run the artefact on ``inputs`` (whole, and one input alone: the batch is dynamic).

    Returns the largest probability gap and how many distinct tasks the Predictor chose.

    Raises :class:`VerificationError` when a class (or chosen task) differs or a
    probability is off by more than ``PROBABILITY_TOLERANCE``.
    """
    try:
        run = runner(path, fmt)
        meta = read_metadata(path, fmt)
    except Exception as error:  # noqa: BLE001
        raise VerificationError(f"the written {fmt} file could not be loaded back ({first_line(error)}); "
                                "it was deleted") from error
    worst, exercised = 0.0, 1
    for batch in (inputs, inputs[:1]):
        classes, tasks, probabilities = reference(predictor, task, batch)
        try:
            got = run(batch)
        except Exception as error:  # noqa: BLE001
            raise VerificationError(f"the written {fmt} file fails on a batch of {batch.shape[0]} "
                                    f"({first_line(error)}); it was deleted") from error
        if task == "all":
            got_classes, got_tasks, got_probabilities = got
        else:
            got_probabilities = F.softmax(got[0].float(), dim=1)
            got_classes = torch.tensor(meta["class_ids"])[got[0].argmax(dim=1)]
            got_tasks = None
        if tasks is not None and not torch.equal(got_tasks.long(), tasks.long()):
            bad = int((got_tasks.long() != tasks.long()).sum())
            raise VerificationError(f"the {fmt} file chooses another task than the Predictor for {bad} of "
                                    f"{batch.shape[0]} inputs; it was deleted")
        if not torch.equal(got_classes.long(), classes.long()):
            bad = int((got_classes.long() != classes.long()).sum())
            raise VerificationError(f"the {fmt} file predicts other classes than the Predictor for {bad} of "
                                    f"{batch.shape[0]} inputs; it was deleted")
        gap = float((got_probabilities.float() - probabilities.float()).abs().max())
        if not gap <= PROBABILITY_TOLERANCE:
            raise VerificationError(f"the {fmt} file's probabilities differ from the Predictor's by {gap:.2e} "
                                    f"(> {PROBABILITY_TOLERANCE:g}); it was deleted")
        worst = max(worst, gap)
        if tasks is not None:
            exercised = max(exercised, len(set(tasks.tolist())))
    return worst, exercised


__all__ = ["ExportError", "ExportReport", "VerificationError", "export_checkpoint", "reference", "verify"]
