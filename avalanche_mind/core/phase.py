"""MIND's phases and the transitions between them, guarded.

An experience is learned in two phases: the teacher (the dense network, or a fresh
copy, on the experience alone), then distillation into the experience's sub-network
(the template's own training loop). Evaluation uses the bank of every trained
sub-network. Each phase leaves the gates and BatchNorm in a state the others must
not see, so an out-of-order call (``eval()`` from inside the teacher phase, a second
``train()`` while one runs) is refused with :class:`PhaseError` instead of
computing something silently wrong. Avalanche's PackNet guards its phases the same way.
"""
from __future__ import annotations

import enum
from contextlib import contextmanager
from typing import Dict, FrozenSet, Iterator

from avalanche_mind.errors import PhaseError


class Phase(enum.Enum):
    IDLE = "idle"
    """Between experiences: nothing is being trained or evaluated."""
    TEACHER = "teacher"
    """The teacher learns the current experience on its output slice."""
    DISTILL = "distill"
    """The student (the experience's sub-network) is trained against the teacher."""
    EVAL = "eval"
    """Every trained sub-network answers: ``eval()``, also a periodic one during distillation."""


_ALLOWED: Dict[Phase, FrozenSet[Phase]] = {
    Phase.IDLE: frozenset({Phase.TEACHER, Phase.EVAL}),
    Phase.TEACHER: frozenset({Phase.DISTILL, Phase.IDLE}),
    Phase.DISTILL: frozenset({Phase.EVAL, Phase.IDLE}),
    Phase.EVAL: frozenset(),  # left only by the end of the evaluation (back to where it started)
}

_WHY = {
    (Phase.TEACHER, Phase.EVAL): "the gates are open on the dense network and the experience has no sub-network "
                                 "yet; evaluate after train() returns (or with eval_every during distillation)",
    (Phase.EVAL, Phase.EVAL): "an evaluation is already running; call eval() after it returns",
    (Phase.EVAL, Phase.TEACHER): "train() cannot start inside an evaluation; call it after eval() returns",
}


class PhaseGuard:
    """The current :class:`Phase`; :meth:`enter` refuses a transition the procedure does not make."""

    def __init__(self) -> None:
        self.phase = Phase.IDLE

    def enter(self, phase: Phase, action: str = "") -> None:
        if phase not in _ALLOWED[self.phase]:
            why = _WHY.get((self.phase, phase))
            if why is None and phase in (Phase.TEACHER, Phase.IDLE):
                why = "train() was called while an experience is being trained; call it again after it returns"
            raise PhaseError(f"MIND cannot {action or 'enter the ' + phase.value + ' phase'} during its "
                             f"{self.phase.value} phase: {why or 'this order of calls is not part of the procedure'}")
        self.phase = phase

    def reset(self) -> None:
        """Back to IDLE, whatever the phase: after a failed experience has been rolled back."""
        self.phase = Phase.IDLE

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The EVAL phase for the duration of an evaluation, then back to the phase it interrupted."""
        previous = self.phase
        self.enter(Phase.EVAL, "evaluate (eval())")
        try:
            yield
        finally:
            self.phase = previous


__all__ = ["Phase", "PhaseGuard"]
