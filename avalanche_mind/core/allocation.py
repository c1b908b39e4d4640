"""Allocation (pruning): give FREE weights to the experience just learned by the teacher.

Runs after the teacher phase and before distillation. The default rule is a
uniform random choice (the paper's MIND); self-distillation keeps the teacher's
largest-magnitude FREE weights, which start the student from the teacher's values.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin

from avalanche_mind.core.ownership import OwnershipMap


class AllocationPlugin(SupervisedPlugin, supports_distributed=True):
    """Assigns the current experience its sub-network in the ownership map."""

    def __init__(self, rule: str = "random") -> None:
        super().__init__()
        if rule not in ("random", "magnitude"):
            raise ValueError(f"unknown allocation rule {rule!r}; use 'random' or 'magnitude'")
        self.rule = rule

    def allocate(
        self, ownership: OwnershipMap, task: int, classes: Sequence[int],
        generator: Optional[torch.Generator], zero_start: bool,
    ) -> None:
        """Give ``task`` (whose output slice is ``classes``) its share of the FREE weights."""
        ownership.allocate(task, classes, rule=self.rule, generator=generator, zero_start=zero_start)
