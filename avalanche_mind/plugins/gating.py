"""Gradient gating: during a phase, only the weights of the task being trained move.

Zeroing gradients is not enough: AdamW's decoupled weight decay and any momentum
move a parameter whose gradient is zero. So :class:`WeightGuard` keeps a copy of
every guarded parameter taken once at the start of the phase (never per step),
zeroes the frozen gradients after ``backward`` and writes the frozen values back,
in place, after each optimiser step. Frozen weights therefore stay bit-identical
whatever the optimiser does.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from avalanche_mind.core.ownership import OwnershipMap


def _copy_all(targets: List[Tensor], sources: List[Tensor]) -> None:
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)  # one call instead of one per tensor
    else:  # pragma: no cover - older torch
        for target, source in zip(targets, sources):
            target.copy_(source)


class WeightGuard:
    """Restores every frozen parameter value after each optimiser step.

    Cost per step: one in-place ``torch.where`` per partly frozen parameter and one
    foreach copy over the wholly frozen ones (no allocation, no model copy);
    parameters whose every entry is trainable are not touched at all.
    """

    def __init__(self, trainable: List[Tuple[nn.Parameter, Optional[Tensor]]]) -> None:
        # Each entry: (parameter, boolean mask of its trainable entries), with
        # mask None for a parameter frozen as a whole. Fully trainable parameters
        # are not listed at all (and a mask that is all True is dropped here).
        self._partial: List[Tuple[nn.Parameter, Tensor, Tensor]] = []
        self._whole: List[nn.Parameter] = []
        self._whole_saved: List[Tensor] = []
        with torch.no_grad():
            for param, mask in trainable:
                if mask is None:
                    self._whole.append(param)
                    self._whole_saved.append(param.detach().clone())
                elif not bool(mask.all()):
                    mask = mask.to(device=param.device, dtype=torch.bool)
                    self._partial.append((param, mask, param.detach().clone()))

    @torch.no_grad()
    def zero_frozen_grads(self) -> None:
        for param in self._whole:
            param.grad = None
        for param, mask, _ in self._partial:
            if param.grad is not None:
                param.grad.mul_(mask)

    @torch.no_grad()
    def restore(self) -> None:
        if self._whole:
            _copy_all([p.data for p in self._whole], self._whole_saved)
        for param, mask, saved in self._partial:
            # Elementwise, in place: out= aliases an input exactly, which is allowed.
            torch.where(mask, param.data, saved, out=param.data)


def guard_for(
    model: nn.Module,
    ownership: OwnershipMap,
    owner: int,
    per_experience_trainable: bool,
) -> WeightGuard:
    """The guard of a phase that trains the gated weights whose owner is ``owner``.

    ``per_experience_trainable``: whether the per-experience tensors (normalisation,
    biases, tokens: every parameter that is not a gated weight, see
    :mod:`avalanche_mind.core.snapshots`) may move; they are stored per experience after it.
    """
    gated_weights = {id(layer.weight): layer for layer in ownership.layers.values()}
    entries: List[Tuple[nn.Parameter, Optional[Tensor]]] = []
    for param in model.parameters():
        layer = gated_weights.get(id(param))
        if layer is not None:
            entries.append((param, ownership.owned_by(layer, owner)))
        elif not per_experience_trainable:
            entries.append((param, None))
    return WeightGuard(entries)


def guarded_step(optimizer: torch.optim.Optimizer, guard: Optional[WeightGuard]) -> None:
    """``optimizer.step()`` that leaves ``guard``'s frozen weights bit-identical (``None``: a plain step).

    For loops that call the optimiser themselves (the teacher phase); the
    distillation phase gets the same two calls from Avalanche's callbacks.
    """
    if guard is not None:
        guard.zero_frozen_grads()
    optimizer.step()
    if guard is not None:
        guard.restore()


class GatingPlugin(SupervisedPlugin, supports_distributed=True):
    """Gates the distillation phase to one experience's sub-network.

    :meth:`gate` (called by MIND before distillation) activates the sub-network and
    takes the guard; the two per-step callbacks then keep every frozen weight
    bit-identical, whatever other plugins run around them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.guard: Optional[WeightGuard] = None

    def gate(
        self, model: nn.Module, ownership: OwnershipMap, task: int, weight_sharing: bool, per_experience_trainable: bool
    ) -> None:
        """Route the forward pass through ``task``'s sub-network and freeze everything it does not own."""
        ownership.activate(task, weight_sharing)
        self.guard = guard_for(model, ownership, owner=task, per_experience_trainable=per_experience_trainable)

    def after_backward(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if self.guard is not None:
            self.guard.zero_frozen_grads()

    def after_update(self, strategy: SupervisedTemplate, **kwargs) -> None:
        if self.guard is not None:
            self.guard.restore()

    def after_training_exp(self, strategy: SupervisedTemplate, **kwargs) -> None:
        self.guard = None
