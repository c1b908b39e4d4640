"""What MIND must remember between experiences, beside the model's own weights.

The ownership map lives in the gated layers' ``owner`` buffers (so in
``model.state_dict()``); everything else that a checkpoint needs is here.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from avalanche_mind.core.phase import Phase, PhaseGuard
from avalanche_mind.task_id.statistics import ScoreStatistics


def experience_classes(experience) -> List[int]:
    """Sorted class ids of an experience, from its classes timeline or its targets."""
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        classes = experience.dataset.targets.uniques
    return sorted(int(c) for c in classes)


@dataclass
class MINDState:
    """Per-experience records, indexed by MIND's task id (0, 1, ...), and the procedure's phase.

    Saved (:meth:`state_dict`): the records. Not saved: the phase, the per-task lookups
    derived from the slices, and the rollback point of the experience being trained.
    """

    slices: List[List[int]] = field(default_factory=list)
    """Classes of each experience: its output slice."""
    experience_ids: List[int] = field(default_factory=list)
    """The stream's ``current_experience`` of each task, to find a test experience's sub-network."""
    bn_snapshots: List[Dict[str, Tensor]] = field(default_factory=list)
    """BatchNorm parameters and statistics saved after each experience."""
    score_statistics: ScoreStatistics = field(default_factory=ScoreStatistics)
    """Per-task score sums on training inputs (own, rotated, later experiences'): the statistics task-inference rules."""
    negative_bank: List[Tensor] = field(default_factory=list)
    """Per task, the stored negatives later experiences draw from (``negatives="inversion"``: rebuilt
    images; ``negative_memory``: the rehearsal reference's real ones); empty when neither is on."""

    phases: PhaseGuard = field(default_factory=PhaseGuard, repr=False, compare=False)
    """Which phase of the procedure runs; refuses calls out of order."""
    _lookups: Dict[Tuple[str, int, str], Tensor] = field(default_factory=dict, repr=False, compare=False)
    _rollback: Optional[Dict[str, Any]] = field(default=None, repr=False, compare=False)

    @property
    def n_tasks(self) -> int:
        return len(self.slices)

    @property
    def phase(self) -> Phase:
        return self.phases.phase

    # ------------------------------------------------------------------ lookups
    def output_slice(self, task: int, device: torch.device) -> Tensor:
        """Class ids of ``task`` as an index tensor on ``device`` (built once)."""
        key = ("slice", task, str(device))
        if key not in self._lookups:
            self._lookups[key] = torch.tensor(self.slices[task], dtype=torch.long, device=device)
        return self._lookups[key]

    def slice_position(self, task: int, width: int, device: torch.device) -> Tensor:
        """Lookup class id -> position inside ``task``'s output slice (-1 outside), ``width`` entries at least."""
        key = ("position", task, str(device))
        if key not in self._lookups:
            slice_ = self.output_slice(task, device)
            lookup = torch.full((max(width, int(slice_.max()) + 1),), -1, dtype=torch.long, device=device)
            lookup[slice_] = torch.arange(len(slice_), device=device)
            self._lookups[key] = lookup
        return self._lookups[key]

    # ------------------------------------------------------------------ rollback
    def begin_experience(self, model: nn.Module, generator: torch.Generator) -> None:
        """Keep what training one experience changes, so that :meth:`roll_back` can undo it."""
        self._rollback = {
            "n_tasks": self.n_tasks,
            "bn_snapshots": list(self.bn_snapshots),
            "negative_bank": list(self.negative_bank),
            "score_statistics": copy.deepcopy(self.score_statistics),
            "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "generator": generator.get_state(),
        }

    def end_experience(self) -> None:
        """The experience is complete (and its checkpoint, if any, written): nothing to undo any more."""
        self._rollback = None
        self.phases.enter(Phase.IDLE)

    def roll_back(self, model: nn.Module, generator: torch.Generator) -> None:
        """Undo the registration, allocation and training of the experience whose training failed."""
        point, self._rollback = self._rollback, None
        self.phases.reset()
        if point is None:
            return
        n = int(point["n_tasks"])
        del self.slices[n:]
        del self.experience_ids[n:]
        self.bn_snapshots = list(point["bn_snapshots"])
        self.score_statistics = point["score_statistics"]
        self.negative_bank = list(point["negative_bank"])
        self._lookups.clear()
        with torch.no_grad():
            model.load_state_dict(point["model"])
        generator.set_state(point["generator"])

    def register(self, experience, *, n_experiences: int, n_outputs: Optional[int]) -> None:
        """Record ``experience`` as the next task, refusing one that cannot be trained (and saying why)."""
        if self.n_tasks >= n_experiences:
            raise ValueError(
                f"MIND was built with n_experiences={n_experiences} and has trained "
                f"{self.n_tasks} experiences: no capacity is left for another. Build MIND "
                "with n_experiences equal to the stream length, or with capacity=<fraction> and "
                "n_experiences a generous upper bound (e.g. capacity=0.1, n_experiences=100)."
            )
        if len(experience.dataset) == 0:
            raise ValueError(
                f"experience {experience.current_experience} has no samples: there is nothing to "
                "train on; leave it out of the stream"
            )
        classes = experience_classes(experience)
        if n_outputs is not None and classes and classes[-1] >= n_outputs:
            raise ValueError(
                f"experience {experience.current_experience} has class {classes[-1]}, but the "
                f"model's classifier has only {n_outputs} outputs; build the model with "
                f"num_classes >= {classes[-1] + 1} (the benchmark's total number of classes)."
            )
        if len(classes) == 1 and n_experiences > 1:
            warnings.warn(
                f"experience {experience.current_experience} has a single class ({classes[0]}): its "
                "sub-network answers every input with full confidence, so the task-agnostic (TAg) choice "
                "will favour it; task-aware (TAw) accuracy is unaffected. Give each experience two "
                "classes or more for TAg.",
                stacklevel=2,
            )
        self.slices.append(classes)
        self.experience_ids.append(int(experience.current_experience))

    def task_of_experience(self, experience_id: int) -> int:
        """MIND's task id for a stream experience id, or -1 if it was never trained."""
        for task in range(len(self.experience_ids) - 1, -1, -1):
            if self.experience_ids[task] == experience_id:
                return task
        return -1

    def state_dict(self) -> Dict[str, Any]:
        """Plain lists and tensors; the BatchNorm snapshots stacked, one tensor per entry.

        Stacking (experiences along dim 0) saves ``torch.save``'s per-tensor overhead,
        which for small BatchNorm vectors is larger than the data itself.
        """
        snapshots = self.bn_snapshots
        return {
            "slices": [list(s) for s in self.slices],
            "experience_ids": list(self.experience_ids),
            "n_bn_snapshots": len(snapshots),
            "bn_snapshots": {k: torch.stack([s[k] for s in snapshots]) for k in snapshots[0]} if snapshots else {},
            "score_statistics": self.score_statistics.state_dict(),
            "negative_bank": list(self.negative_bank),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (also reads a list of per-experience dicts)."""
        self.slices = [list(map(int, s)) for s in state["slices"]]
        self.experience_ids = list(map(int, state["experience_ids"]))
        snapshots = state["bn_snapshots"]
        if isinstance(snapshots, dict):
            count = snapshot_count(state)
            snapshots = [{k: v[i] for k, v in snapshots.items()} for i in range(count)]
        self.bn_snapshots = [dict(s) for s in snapshots]
        # Absent from checkpoints written before the statistics rules existed.
        self.score_statistics = ScoreStatistics(state.get("score_statistics"))
        self.negative_bank = [torch.as_tensor(t) for t in state.get("negative_bank", [])]
        self._lookups.clear()


def snapshot_count(state: Dict[str, Any]) -> int:
    """Number of BatchNorm snapshots in a :meth:`MINDState.state_dict`; ValueError if its tensors disagree."""
    snapshots = state["bn_snapshots"]
    if not isinstance(snapshots, dict):
        return len(snapshots)
    count = int(state["n_bn_snapshots"])
    for key, value in snapshots.items():
        if not isinstance(value, Tensor) or value.dim() == 0 or value.shape[0] != count:
            raise ValueError(f"BatchNorm snapshot entry {key!r} does not hold {count} experiences")
    return count
