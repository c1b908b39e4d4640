"""MIND's four plugins, one concern each."""
from avalanche_mind.core.allocation import AllocationPlugin
from avalanche_mind.core.batchnorm import BatchNormPlugin
from avalanche_mind.plugins.gating import GatingPlugin, WeightGuard
from avalanche_mind.plugins.teacher import TeacherPlugin

__all__ = ["AllocationPlugin", "BatchNormPlugin", "GatingPlugin", "TeacherPlugin", "WeightGuard"]
