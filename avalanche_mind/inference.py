"""Task-aware (TAw) and task-agnostic (TAg) inference over MIND's sub-networks.

:class:`SubnetworkBank` builds, once per evaluation, each task's masked weights and
BatchNorm snapshot, and runs them with ``torch.func.functional_call``: the model is
never copied, per batch or per task.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from avalanche_mind.ownership import OwnershipMap

TASK_INFERENCE_RULES = ("max_confidence", "entropy")

LOG_EPS = math.log(1e-8)
"""Log-probability given, in the full-width TAg output, to classes outside the chosen slice."""


class SubnetworkBank:
    """Masked weights and BatchNorm state of every trained sub-network, built once."""

    def __init__(
        self,
        model: nn.Module,
        ownership: OwnershipMap,
        bn_snapshots: Sequence[Dict[str, Tensor]],
        n_tasks: int,
        weight_sharing: bool,
    ) -> None:
        self.model = model
        self.tasks: List[Dict[str, Tensor]] = []
        for task in range(n_tasks):
            tensors: Dict[str, Tensor] = {}
            for name, layer in ownership.layers.items():
                mask = ownership.subnetwork_mask(layer, task, weight_sharing)
                tensors[f"{name}.weight"] = layer.weight.detach() * mask
                tensors[f"{name}.mask"] = torch.ones((), device=mask.device)
            # A task still being trained (periodic eval) has no snapshot yet: the
            # model's own (live) BatchNorm tensors are used for it.
            if task < len(bn_snapshots):
                tensors.update(bn_snapshots[task])
            self.tasks.append(tensors)

    def __len__(self) -> int:
        return len(self.tasks)

    def logits(self, x: Tensor, task: int) -> Tensor:
        return functional_call(self.model, self.tasks[task], (x,))

    def all_logits(self, x: Tensor) -> List[Tensor]:
        return [self.logits(x, t) for t in range(len(self.tasks))]


@dataclass
class Prediction:
    """One minibatch's answers, all from the same forward passes."""

    output: Tensor
    """Full-width TAg log-probabilities: the chosen slice's, LOG_EPS elsewhere."""
    tag_class: Tensor
    task: Tensor
    """Task chosen by task inference (TaskId)."""
    taw_class: Optional[Tensor]
    """Prediction with the given task's sub-network (None if no task was given)."""


def slice_confidence(logits: Tensor, temperature: float) -> Tensor:
    return F.softmax(logits / temperature, dim=1)


def choose_task(slice_logits: Sequence[Tensor], temperature: float, rule: str) -> Tensor:
    """Pick, for each input, the task whose tempered softmax is most confident.

    ``rule="entropy"``: among the two most confident tasks, the one whose
    distribution has lower entropy (normalised by the log of its slice size).
    """
    probs = [slice_confidence(l, temperature) for l in slice_logits]
    confidence = torch.stack([p.max(dim=1).values for p in probs], dim=1)  # B x T
    if rule == "max_confidence" or len(probs) < 2:
        return confidence.argmax(dim=1)
    entropy = torch.stack(
        [-(p * p.clamp_min(1e-12).log()).sum(1) / math.log(max(p.shape[1], 2)) for p in probs], dim=1
    )
    top2 = confidence.topk(2, dim=1).indices
    first, second = top2[:, 0], top2[:, 1]
    e_first = entropy.gather(1, first[:, None])[:, 0]
    e_second = entropy.gather(1, second[:, None])[:, 0]
    return torch.where(e_second < e_first, second, first)


def predict(
    bank: SubnetworkBank,
    x: Tensor,
    slices: Sequence[Tensor],
    temperature: float,
    rule: str = "max_confidence",
    true_task: Optional[int] = None,
) -> Prediction:
    """TAg (and, if ``true_task`` is given, TAw) predictions for ``x``."""
    logits = bank.all_logits(x)
    slice_logits = [l[:, s] for l, s in zip(logits, slices)]
    task = choose_task(slice_logits, temperature, rule)
    output = logits[0].new_full(logits[0].shape, LOG_EPS)
    for t, (s, l) in enumerate(zip(slices, slice_logits)):
        rows = task == t
        if rows.any():
            output[rows.nonzero()[:, 0][:, None], s[None, :]] = F.log_softmax(l[rows], dim=1)
    tag_class = output.argmax(dim=1)
    taw_class = None
    if true_task is not None and 0 <= true_task < len(slices):
        taw_class = slices[true_task][slice_logits[true_task].argmax(dim=1)]
    return Prediction(output=output, tag_class=tag_class, task=task, taw_class=taw_class)
