"""What the W&B logger writes besides Avalanche's metrics: MIND's own quantities, as W&B rows.

The logger (:class:`~avalanche_mind.logging.wandb_avalanche_logger.MINDWandBLogger`)
decides when to log; the functions here say what: the run's configuration, the
teacher's loss curve, the per-epoch loss of the training loop, the capacity used
per layer, and a stream's accuracy matrix (table, heatmap, seen-mean, forgetting).
Each row carries its x axis as a key; :data:`AXES` declares them to W&B.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Dict, Iterator, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from avalanche_mind.logging.accuracy_matrix import accuracy_matrix_figure, forgetting_from_matrix

if TYPE_CHECKING:
    from avalanche_mind.core.ownership import OwnershipMap

AXES: Dict[str, str] = {
    "teacher/*": "epoch/teacher",
    "distillation/*": "epoch/distillation",
    "train/*": "epoch/train",  # strategies other than MIND (benchmarks/compare.py)
    "capacity/*": "trainer/experience",
    "eval/*": "trainer/experience",
    "forgetting/*": "trainer/experience",
    "Top1_*": "trainer/experience",
    "Loss_*": "trainer/experience",
    "StreamForgetting*": "trainer/experience",
    "ExperienceForgetting*": "trainer/experience",
}
"""Metric name pattern -> the key its charts use as x axis (``define_metric``)."""

EXP_METRIC = re.compile(
    r"^Top1_(?P<kind>TAg|TAw|TaskId)_Acc_Exp/eval_phase/(?P<stream>\w+?)_stream/Task\d+/Exp(?P<exp>\d+)$"
)
"""The per-experience accuracies that fill the accuracy matrices (kind, stream, test experience)."""


def is_mind(strategy: Any) -> bool:
    """True for MIND, whose training loop is its distillation phase, after a teacher phase."""
    # Imported here: MIND's module imports avalanche_mind.logging, which must not import it back.
    from avalanche_mind.core.strategy import MIND

    return isinstance(strategy, MIND)


def run_config(strategy: Any) -> Dict[str, Any]:
    """MIND's hyperparameters (as checkpoints store them), the model's size, the strategy and device."""
    model = strategy.model
    return {
        "mind": strategy.config.to_dict(),
        "model": {
            "class": type(model).__name__,
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "gated_weights": int(strategy.ownership.n_weights()),
            "gated_layers": len(strategy.ownership.layers),
        },
        "strategy": type(strategy).__name__,
        "device": str(strategy.device),
    }


def teacher_rows(strategy: Any, first_epoch: int) -> Iterator[Dict[str, Any]]:
    """One row per teacher epoch of the current experience, numbered on from ``first_epoch``."""
    task = strategy.current_task
    for epoch, loss in enumerate(strategy.teacher_plugin.losses):
        yield {"teacher/loss": loss, "teacher/experience": task, "teacher/epoch_in_experience": epoch,
               "epoch/teacher": first_epoch + epoch}


def epoch_row(phase: str, loss: float, lr: float, task: int, epoch_in_experience: int, epoch: int) -> Dict[str, Any]:
    """The mean loss and learning rate of one training epoch (``phase``: distillation or train)."""
    return {
        f"{phase}/loss": loss,
        f"{phase}/lr": lr,
        f"{phase}/experience": task,
        f"{phase}/epoch_in_experience": epoch_in_experience,
        f"epoch/{phase}": epoch,
    }


def capacity_row(ownership: "OwnershipMap") -> Dict[str, float]:
    """The share of each gated layer's weights owned so far, and of all of them together."""
    used = ownership.capacity_used()
    sizes = {n: l.weight.numel() for n, l in ownership.layers.items()}
    row = {f"capacity/{name}": value for name, value in used.items()}
    row["capacity/total"] = sum(used[n] * sizes[n] for n in used) / max(sum(sizes.values()), 1)
    return row


def matrix_row(wandb: Any, stream: str, arrays: Mapping[str, np.ndarray], n_cols: int,
               row_index: int) -> Dict[str, Any]:
    """A stream's accuracy matrices after experience ``row_index``: table, heatmap, seen-mean, forgetting.

    ``arrays``: kind (TAg, TAw, TaskId, in that order) -> its matrix so far.
    """
    columns = ["metric", "after_experience"] + [f"exp_{j}" for j in range(n_cols)]
    data = [
        [kind, i] + [None if math.isnan(v) else float(v) for v in matrix[i]]
        for kind, matrix in arrays.items()
        for i in range(matrix.shape[0])
    ]
    row: Dict[str, Any] = {
        f"accuracy_matrix/{stream}/table": wandb.Table(columns=columns, data=data),
        "trainer/experience": row_index + 1,
    }
    for kind, matrix in arrays.items():
        seen = matrix[row_index, : row_index + 1]
        seen = seen[~np.isnan(seen)]
        if seen.size:
            row[f"eval/{stream}/{kind}_seen_mean"] = float(seen.mean())
        if kind != "TaskId":
            value = forgetting_from_matrix(matrix[: row_index + 1])
            if not math.isnan(value):
                row[f"forgetting/{stream}/{kind}"] = value
    heatmap = {k: arrays[k] for k in ("TAg", "TAw") if k in arrays}
    if heatmap:
        figure = accuracy_matrix_figure(heatmap, title=f"{stream} stream after experience {row_index}")
        row[f"accuracy_matrix/{stream}/heatmap"] = wandb.Image(figure_to_array(figure))
    return row


def figure_to_array(figure) -> np.ndarray:
    """The figure's RGB pixels, drawn without pyplot (no backend or global figure state)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


__all__ = ["AXES", "EXP_METRIC", "capacity_row", "epoch_row", "figure_to_array", "is_mind", "matrix_row",
           "run_config", "teacher_rows"]
