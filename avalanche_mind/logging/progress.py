"""Progress bars for MIND's two phases: one per-epoch tqdm bar each, with loss and learning rate.

The teacher phase draws its bar itself (:class:`~avalanche_mind.plugins.teacher.TeacherPlugin`);
the distillation phase, which is the template's own training loop, draws it
through :class:`DistillationProgressPlugin`, which MIND always adds to its plugins.
Both show only when the strategy's ``verbose`` is true (``--quiet`` in scripts
turns it off), and write to stderr.
"""
from __future__ import annotations

from typing import Any

from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from tqdm.auto import tqdm

from avalanche_mind.core.distributed import is_main_process


class _PhaseBar:
    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="epoch", leave=False) if enabled else None

    def update(self, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(strategy: Any, total: int, desc: str) -> _PhaseBar:
    """A per-epoch bar showing loss and learning rate, if the strategy is verbose (on rank 0 only under torchrun)."""
    return _PhaseBar(total, desc, bool(getattr(strategy, "verbose", False)) and is_main_process())


class EpochLoss:
    """Mean of ``strategy.loss`` over an epoch's minibatches, weighted by their size.

    The sum stays a tensor on the loss's device, read once per epoch: no host
    synchronisation per training step.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, strategy) -> None:
        n = len(strategy.mb_y) if getattr(strategy, "mb_y", None) is not None else 1
        self.total = self.total + strategy.loss.detach() * n
        self.count += n

    @property
    def mean(self) -> float:
        return float(self.total) / self.count if self.count else float("nan")


def current_lr(strategy) -> float:
    """The learning rate of the strategy's optimizer (first parameter group)."""
    return float(strategy.optimizer.param_groups[0]["lr"])


class DistillationProgressPlugin(SupervisedPlugin, supports_distributed=True):
    """A per-epoch bar for the distillation phase: mean loss and the learning rate used in the epoch."""

    def __init__(self) -> None:
        super().__init__()
        self._bar = None
        self._loss = EpochLoss()
        self._lr = float("nan")

    def before_training_exp(self, strategy: SupervisedTemplate, **kwargs) -> None:
        self._bar = progress_bar(strategy, strategy.train_epochs, f"distillation exp {strategy.current_task}")

    def before_training_epoch(self, strategy: SupervisedTemplate, **kwargs) -> None:
        self._loss.reset()
        self._lr = current_lr(strategy)

    def after_training_iteration(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if self._bar is not None:  # silent (verbose=False): nothing to accumulate
            self._loss.update(strategy)

    def after_training_epoch(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if self._bar is not None:
            self._bar.update(loss=self._loss.mean, lr=self._lr)

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["DistillationProgressPlugin", "EpochLoss", "current_lr", "progress_bar"]
