"""The reference code the "before" and "reference" figures of ``benchmarks/perf.py`` are measured against.

Each is kept only because a printed figure is a ratio against it; the library
does not use any of them, and nothing else should.

- ``DeepCopyBank``: the reference implementation's TAg inference (deep-copy and
  prune the whole model for every task, on every batch): the
  ``deep-copy (reference)`` rows of the inference section.
- ``OriginalGuard`` / ``original_guard``: ``WeightGuard`` as it was before
  issue 5: the ``MIND step, WeightGuard before`` row and the guard-alone
  ``before`` figure of the training section.
- ``before_state_payload``: what a saved MIND state held before issue 5 (int8
  owner, one dict of tensors per BatchNorm snapshot): the ``before: ...`` rows of
  the state section.

The former ``SubnetworkBank`` (``functional_call`` per task) is not here: the
library's ``SubnetworkBank(mode="module")`` is exactly that code.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from avalanche_mind import OwnershipMap, gated_layers
from avalanche_mind.core.snapshots import load_experience_state
from avalanche_mind.core.state import MINDState


class DeepCopyBank:
    """The reference implementation's TAg inference: copy and prune the model per task, per batch."""

    def __init__(self, model, ownership, snapshots, weight_sharing=True):
        self.model, self.ownership, self.snapshots, self.weight_sharing = model, ownership, snapshots, weight_sharing

    def __len__(self) -> int:
        return len(self.snapshots)

    def all_logits(self, x: Tensor) -> List[Tensor]:
        out = []
        for task, snapshot in enumerate(self.snapshots):
            net = copy.deepcopy(self.model)
            with torch.no_grad():
                for (_, src), (_, layer) in zip(gated_layers(self.model), gated_layers(net)):
                    layer.weight.mul_(self.ownership.subnetwork_mask(src, task, self.weight_sharing))
                    layer.mask = torch.ones((), device=layer.weight.device)
            load_experience_state(net, snapshot)
            out.append(net.eval()(x))
        return out


class OriginalGuard:
    """WeightGuard as it was before issue 5 (one where() + copy per guarded parameter)."""

    def __init__(self, trainable: Sequence[Tuple[nn.Parameter, Optional[Tensor]]]):
        self._entries = [(p, mask, p.detach().clone()) for p, mask in trainable]

    @torch.no_grad()
    def zero_frozen_grads(self):
        for param, mask, _ in self._entries:
            if param.grad is None:
                continue
            if mask is None:
                param.grad = None
            else:
                param.grad.mul_(mask)

    @torch.no_grad()
    def restore(self):
        for param, mask, saved in self._entries:
            if mask is None:
                param.copy_(saved)
            else:
                param.copy_(torch.where(mask, param, saved))


def original_guard(model: nn.Module, ownership: OwnershipMap, owner: int) -> OriginalGuard:
    """The former guard of ``owner``'s weights: every gated weight, masked to what ``owner`` owns."""
    entries = []
    gated = {id(l.weight): l for l in ownership.layers.values()}
    for p in model.parameters():
        layer = gated.get(id(p))
        if layer is not None:
            entries.append((p, ownership.owned_by(layer, owner)))
    return OriginalGuard(entries)


def before_state_payload(model: nn.Module, state: MINDState, snapshots: Sequence[Dict[str, Tensor]]) -> Dict[str, Any]:
    """A saved MIND state in the format before issue 5: int8 owner, one dict per BatchNorm snapshot."""
    listed = {**state.state_dict(), "bn_snapshots": [dict(s) for s in snapshots]}
    return {"model": model.state_dict(), "state": listed}
