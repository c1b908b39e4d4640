"""How MIND answers in eval: every trained sub-network, the task choice, and the TAg output.

A mixin of :class:`~avalanche_mind.core.strategy.MIND` (before Avalanche's template
in its bases). An evaluation builds the bank of sub-networks once
(:class:`~avalanche_mind.inference.bank.SubnetworkBank`: masked weights and
BatchNorm snapshot per task), runs in the ``EVAL`` phase (refused during the
teacher phase), and leaves the random state training continues from untouched
(see :mod:`avalanche_mind.io.random_state`). In eval, ``mb_output`` is a
full-width vector whose argmax is the task-agnostic (TAg) answer, so Avalanche's
metrics work unchanged; :attr:`last_prediction` holds the TAw answer and the task chosen.
"""
from __future__ import annotations

from torch import Tensor

from avalanche_mind.inference.bank import SubnetworkBank, predict
from avalanche_mind.io.random_state import training_rng_kept
from avalanche_mind.task_id import STATISTICS_RULES


class TaskAgnosticEvaluation:
    """Overrides of Avalanche's eval hooks; uses ``state``, ``ownership``, ``config`` and the template's attributes."""

    def eval(self, exp_list, **kwargs):
        """Avalanche's ``eval``, leaving the random state training continues from untouched
        (see :mod:`avalanche_mind.io.random_state`)."""
        with self.state.phases.evaluating(), training_rng_kept(self):
            return super().eval(exp_list, **kwargs)

    def _before_eval(self, **kwargs) -> None:
        # Masked weights and BatchNorm state per sub-network: built once per eval.
        self._bank = None
        if self.state.n_tasks > 0:
            self._bank = SubnetworkBank(
                self.model, self.ownership, self.state.bn_snapshots, self.state.n_tasks, self.config.weight_sharing
            )
        super()._before_eval(**kwargs)

    def _after_eval(self, **kwargs) -> None:
        super()._after_eval(**kwargs)
        self._bank = None
        self.last_prediction = None

    def _before_eval_exp(self, **kwargs) -> None:
        self.eval_task = self.state.task_of_experience(int(self.experience.current_experience))
        super()._before_eval_exp(**kwargs)

    def forward(self) -> Tensor:
        if self.is_training or self._bank is None:
            self.last_prediction = None
            return self.checked_forward(self.model, self.mb_x)
        slices = [self.output_slice(t) for t in range(len(self._bank))]
        rule = self.task_inference
        if rule in STATISTICS_RULES and not self.state.score_statistics.complete(len(slices)):
            rule = "max_confidence"  # periodic eval inside an experience: its statistics come at its end
        self.last_prediction = predict(
            self._bank, self.mb_x, slices, self.temperature, rule,
            true_task=self.eval_task if self.eval_task >= 0 else None,
            statistics=self.state.score_statistics,
        )
        return self.last_prediction.output


__all__ = ["TaskAgnosticEvaluation"]
