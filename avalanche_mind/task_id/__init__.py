"""Task identification: which sub-network a test input belongs to (the TAg choice).

:mod:`.rules` holds the seven rules (the only implementation, shared by evaluation,
the ``Predictor`` and export), :mod:`.statistics` the per-task score statistics the
statistics rules need, and :mod:`.gather` how they are collected after each experience.
"""
from avalanche_mind.task_id.rules import (
    STATISTICS_RULES,
    TASK_INFERENCE_RULES,
    check_rule,
    choose_task,
    choose_with,
    entropy_choice,
    rule_constants,
    scores_with,
    task_scores,
)
from avalanche_mind.task_id.statistics import N_FEATURES, ScoreStatistics, rotations, uniform_target_loss

__all__ = [
    "N_FEATURES", "STATISTICS_RULES", "TASK_INFERENCE_RULES", "ScoreStatistics", "check_rule", "choose_task",
    "choose_with", "entropy_choice", "rotations", "rule_constants", "scores_with", "task_scores",
    "uniform_target_loss",
]
