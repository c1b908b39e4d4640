"""Errors a MIND run reports to its user."""
from __future__ import annotations


class TrainingDivergedError(ArithmeticError):
    """A loss became NaN or infinite: the run stopped before its weights were kept or saved."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or made for another configuration."""


__all__ = ["CheckpointError", "TrainingDivergedError"]
