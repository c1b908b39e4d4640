"""Errors a MIND run reports to its user."""
from __future__ import annotations


class TrainingDivergedError(ArithmeticError):
    """A loss became NaN or infinite: the run stopped before its weights were kept or saved."""


def few(names) -> str:
    """The first five of ``names``, and how many more: for messages that name what is wrong."""
    names = list(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def diverged(what: str, beta: bool = False) -> TrainingDivergedError:
    """The error a diverged experience raises: what happened, that nothing was kept, and the fix."""
    knobs = "the learning rates (lr, teacher_lr)" + (" or beta" if beta else "")
    return TrainingDivergedError(f"training diverged: {what}. Nothing of this experience was kept or saved; "
                                 f"lower {knobs} and run it again.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupt, or made for another configuration."""


class PhaseError(RuntimeError):
    """A call MIND cannot honour in its current phase (e.g. ``eval()`` while the teacher trains)."""


__all__ = ["CheckpointError", "PhaseError", "TrainingDivergedError", "diverged", "few"]
