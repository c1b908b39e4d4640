"""Score statistics for task identification, gathered from training data as it streams by.

After experience t is trained (and its BatchNorm snapshot stored), its training
inputs go once, without gradient, through sub-network t (own and rotated
statistics) and through every earlier sub-network (foreign statistics for them).
Only sums of score pairs are kept, never an image: the method stays exemplar-free.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from avalanche.core import SupervisedPlugin

from avalanche_mind.inference import SubnetworkBank
from avalanche_mind.task_id import gather_statistics

if TYPE_CHECKING:
    from avalanche_mind.strategy import MIND


class ScoreStatisticsPlugin(SupervisedPlugin):
    """Updates ``strategy.state.score_statistics`` after each training experience."""

    def after_training_exp(self, strategy: "MIND", **kwargs) -> None:
        state, task = strategy.state, strategy.current_task
        bank = SubnetworkBank(strategy.model, strategy.ownership, state.bn_snapshots, state.n_tasks, strategy.weight_sharing)
        slices = [strategy.output_slice(t) for t in range(state.n_tasks)]
        gather_statistics(state.score_statistics, strategy.model, bank.features_and_logits, slices, task,
                          strategy.experience.dataset.eval(), strategy.eval_mb_size, strategy.device)
