"""The runner's names, free of torch and Avalanche, so that ``compare --help`` lists them without loading either.

:mod:`~avalanche_mind.runner.strategies` and :mod:`~avalanche_mind.runner.tuning` implement
exactly these names (they check it at import); the help texts list them from here.
"""
from __future__ import annotations

STRATEGY_NAMES = (
    "mind", "mind-paper", "mind-paper-he", "mind-paper-rotation", "mind-sd", "mind-packnet-like", "mind-paper-js",
    "mind-no-negatives", "mind-negatives-transforms", "mind-negatives-features", "mind-negatives-inversion",
    "mind-negative-memory", "packnet-negatives-transforms", "packnet-negatives-features", "packnet-negative-memory",
    "packnet", "lwf", "ewc", "si", "naive", "joint",
)
"""Every strategy a comparison can run, in the table's order."""
LADDER = ("mind-paper-he", "mind-paper-rotation", "mind-sd", "mind-packnet-like", "mind-paper-js")
"""Ablations (rungs between the paper's method and the defaults, and the paper's own): run on request."""
NEGATIVES = tuple(name for name in STRATEGY_NAMES if "negative" in name)
"""The cross-task negatives' ablation: one row per source, the rehearsal reference, PackNet with them: on request."""
DEFAULT_STRATEGIES = tuple(name for name in STRATEGY_NAMES if name not in LADDER + NEGATIVES)
"""What a comparison runs unless ``--strategies`` says otherwise."""
TUNED = ("lwf", "ewc", "si", "packnet")
"""The baselines whose own hyperparameters ``compare --tune`` searches (:data:`~avalanche_mind.runner.tuning.GRIDS`)."""

__all__ = ["DEFAULT_STRATEGIES", "LADDER", "NEGATIVES", "STRATEGY_NAMES", "TUNED"]
