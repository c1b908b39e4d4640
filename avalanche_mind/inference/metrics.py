"""TAg, TAw and task-identification accuracy as Avalanche plugin metrics.

All three read the same eval forward pass (``strategy.last_prediction``), so they
cost nothing extra. TAw uses the evaluated experience's identity, not the
minibatch's task labels, so it works on benchmarks without task labels. Names
follow Avalanche's: ``Top1_TAw_Acc_Exp/eval_phase/test_stream/Task000/Exp003``.
"""
from __future__ import annotations

import warnings
from typing import List

import torch
from avalanche.evaluation import GenericPluginMetric
from avalanche.evaluation.metrics import Accuracy, accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate


class _SubnetworkAccuracy(GenericPluginMetric[float, Accuracy]):
    """Accuracy of one of MIND's answers; emits nothing where it is undefined."""

    kind = ""

    def __init__(self, reset_at: str, emit_at: str) -> None:
        super().__init__(Accuracy(), reset_at=reset_at, emit_at=emit_at, mode="eval")
        self._updated = False

    def reset(self) -> None:
        super().reset()
        self._updated = False

    def update(self, strategy: SupervisedTemplate) -> None:
        prediction = getattr(strategy, "last_prediction", None)
        if prediction is None:
            return
        pair = self._pair(strategy, prediction)
        if pair is not None:
            self._metric.update(*pair)
            self._updated = True

    def _package_result(self, strategy):
        return super()._package_result(strategy) if self._updated else None

    def _pair(self, strategy, prediction):
        raise NotImplementedError

    def __str__(self) -> str:
        suffix = "Exp" if self._emit_at == "experience" else "Stream"
        return f"Top1_{self.kind}_Acc_{suffix}"


class TAgAccuracy(_SubnetworkAccuracy):
    """Task-agnostic accuracy: the class predicted after task inference."""

    kind = "TAg"

    def _pair(self, strategy, prediction):
        return prediction.tag_class, strategy.mb_y


class TAwAccuracy(_SubnetworkAccuracy):
    """Task-aware accuracy: the class predicted by the evaluated experience's own sub-network."""

    kind = "TAw"

    def _pair(self, strategy, prediction):
        if prediction.taw_class is None:
            return None  # an experience not trained yet has no sub-network
        return prediction.taw_class, strategy.mb_y


class TaskIdAccuracy(_SubnetworkAccuracy):
    """How often task inference chose the evaluated experience's sub-network."""

    kind = "TaskId"

    def _pair(self, strategy, prediction):
        true_task = strategy.eval_task
        if true_task < 0:
            return None
        return prediction.task, torch.full_like(prediction.task, true_task)


def mind_metrics(experience: bool = True, stream: bool = True) -> List[_SubnetworkAccuracy]:
    """TAg, TAw and TaskId accuracy, per experience and/or per stream, for an EvaluationPlugin."""
    metrics: List[_SubnetworkAccuracy] = []
    for cls in (TAgAccuracy, TAwAccuracy, TaskIdAccuracy):
        if experience:
            metrics.append(cls(reset_at="experience", emit_at="experience"))
        if stream:
            metrics.append(cls(reset_at="stream", emit_at="stream"))
    return metrics


def mind_evaluator(*loggers, interactive: bool = True, forgetting: bool = True) -> EvaluationPlugin:
    """An ``EvaluationPlugin`` with accuracy, loss, forgetting and MIND's TAg/TAw/TaskId metrics.

    ``loggers``: extra Avalanche loggers (for example a :class:`MINDWandBLogger`;
    None entries, e.g. :func:`wandb_logger_from_args` without ``--wandb``, are skipped);
    ``interactive``: also print with Avalanche's ``InteractiveLogger`` (off for
    ``--quiet`` scripts). Forgetting is Avalanche's ``forgetting_metrics``, which
    reads the TAg output.
    """
    metrics = [
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(experience=True, stream=True),
        *mind_metrics(experience=True, stream=True),
    ]
    if forgetting:
        metrics.append(forgetting_metrics(experience=True, stream=True))
    all_loggers = ([InteractiveLogger()] if interactive else []) + [lg for lg in loggers if lg is not None]
    with warnings.catch_warnings():
        # Without loggers the metrics are still computed and returned by eval().
        warnings.filterwarnings("ignore", message="No loggers specified")
        return EvaluationPlugin(*metrics, loggers=all_loggers)


def default_mind_evaluator() -> EvaluationPlugin:
    """Avalanche's accuracy and loss metrics plus MIND's TAg/TAw/TaskId, printed interactively."""
    return mind_evaluator(forgetting=False)
