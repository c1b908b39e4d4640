"""Score statistics for task identification, gathered from training data as it streams by.

After experience t is trained (and its BatchNorm snapshot stored), its training
inputs go once, without gradient, through sub-network t (own and rotated
statistics) and through every earlier sub-network (foreign statistics for them).
Only sums of score pairs are kept, never an image: the method stays exemplar-free.
"""
from __future__ import annotations

from typing import List

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from avalanche_mind.inference.bank import SubnetworkBank
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.state import MINDState
from avalanche_mind.task_id.rules import gather_statistics


class ScoreStatisticsPlugin(SupervisedPlugin, supports_distributed=True):
    """Updates ``state.score_statistics`` once an experience is trained and its BatchNorm snapshot stored."""

    @staticmethod
    def gather(
        model: nn.Module, ownership: OwnershipMap, state: MINDState, weight_sharing: bool,
        slices: List[Tensor], dataset, batch_size: int, device: torch.device,
    ) -> None:
        """Pass the last trained task's ``dataset`` through every sub-network; add its scores to ``state``."""
        bank = SubnetworkBank(model, ownership, state.bn_snapshots, state.n_tasks, weight_sharing)
        gather_statistics(state.score_statistics, model, bank.features_and_logits, slices, state.n_tasks - 1,
                          dataset, batch_size, device)
