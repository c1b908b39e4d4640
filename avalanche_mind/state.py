"""What MIND must remember between experiences, beside the model's own weights.

The ownership map lives in the gated layers' ``owner`` buffers (so in
``model.state_dict()``); everything else that a checkpoint needs is here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from torch import Tensor


@dataclass
class MINDState:
    """Per-experience records, indexed by MIND's task id (0, 1, ...)."""

    slices: List[List[int]] = field(default_factory=list)
    """Classes of each experience: its output slice."""
    experience_ids: List[int] = field(default_factory=list)
    """The stream's ``current_experience`` of each task, to find a test experience's sub-network."""
    bn_snapshots: List[Dict[str, Tensor]] = field(default_factory=list)
    """BatchNorm parameters and statistics saved after each experience."""

    @property
    def n_tasks(self) -> int:
        return len(self.slices)

    def task_of_experience(self, experience_id: int) -> int:
        """MIND's task id for a stream experience id, or -1 if it was never trained."""
        for task in range(len(self.experience_ids) - 1, -1, -1):
            if self.experience_ids[task] == experience_id:
                return task
        return -1

    def state_dict(self) -> Dict[str, Any]:
        return {
            "slices": [list(s) for s in self.slices],
            "experience_ids": list(self.experience_ids),
            "bn_snapshots": [dict(s) for s in self.bn_snapshots],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.slices = [list(map(int, s)) for s in state["slices"]]
        self.experience_ids = list(map(int, state["experience_ids"]))
        self.bn_snapshots = [dict(s) for s in state["bn_snapshots"]]
