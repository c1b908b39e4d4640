"""MIND's Avalanche plugins: the steps that hook the template's callbacks.

The teacher phase (:class:`TeacherPlugin`, which releases the teacher after each
experience) and the weight guard (:class:`GatingPlugin`, which keeps frozen weights
bit-identical after every optimiser step). Allocation, BatchNorm snapshots and score
statistics hook nothing: they are functions of the ownership map
(:meth:`~avalanche_mind.core.ownership.OwnershipMap.allocate`), of
:mod:`avalanche_mind.core.snapshots` and of :mod:`avalanche_mind.task_id.gather`.
"""
from avalanche_mind.plugins.gating import GatingPlugin, WeightGuard
from avalanche_mind.plugins.teacher import TeacherContext, TeacherPlugin

__all__ = ["GatingPlugin", "TeacherContext", "TeacherPlugin", "WeightGuard"]
