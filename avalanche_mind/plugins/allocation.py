"""Allocation (pruning): give FREE weights to the experience just learned by the teacher.

Runs after the teacher phase and before distillation. The default rule is a
uniform random choice (the paper's MIND); self-distillation keeps the teacher's
largest-magnitude FREE weights, which start the student from the teacher's values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from avalanche.core import SupervisedPlugin

if TYPE_CHECKING:
    from avalanche_mind.strategy import MIND


class AllocationPlugin(SupervisedPlugin):
    """Assigns the current experience its sub-network in the ownership map."""

    def __init__(self, rule: str = "random") -> None:
        super().__init__()
        if rule not in ("random", "magnitude"):
            raise ValueError(f"unknown allocation rule {rule!r}; use 'random' or 'magnitude'")
        self.rule = rule

    def before_training_exp(self, strategy: "MIND", **kwargs) -> None:
        task = strategy.current_task
        strategy.ownership.allocate(
            task, strategy.state.slices[task], rule=self.rule, generator=strategy.generator,
            zero_start=strategy.zero_start,
        )
