"""Gradient gating: during a phase, only the weights of the task being trained move.

Zeroing gradients is not enough: AdamW's decoupled weight decay and any momentum
move a parameter whose gradient is zero. So :class:`WeightGuard` keeps a copy of
every parameter taken once at the start of the phase (never per step), zeroes
the frozen gradients after ``backward`` and writes the frozen values back after
each optimiser step. Frozen weights therefore stay bit-identical whatever the
optimiser does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from avalanche_mind.ownership import OwnershipMap

if TYPE_CHECKING:
    from avalanche_mind.strategy import MIND


class WeightGuard:
    """Restores every frozen parameter value after each optimiser step."""

    def __init__(self, trainable: List[Tuple[nn.Parameter, Optional[Tensor]]]) -> None:
        # Each entry: (parameter, boolean mask of its trainable entries), with
        # mask None for a parameter frozen as a whole. Fully trainable parameters
        # are not listed at all.
        self._entries = [(p, mask, p.detach().clone()) for p, mask in trainable]

    @torch.no_grad()
    def zero_frozen_grads(self) -> None:
        for param, mask, _ in self._entries:
            if param.grad is None:
                continue
            if mask is None:
                param.grad = None
            else:
                param.grad.mul_(mask)

    @torch.no_grad()
    def restore(self) -> None:
        for param, mask, saved in self._entries:
            if mask is None:
                param.copy_(saved)
            else:
                param.copy_(torch.where(mask, param, saved))


def guard_for(
    model: nn.Module,
    ownership: OwnershipMap,
    owner: int,
    shared_trainable: bool,
    batchnorm_trainable: bool,
) -> WeightGuard:
    """The guard of a phase that trains the gated weights whose owner is ``owner``.

    ``shared_trainable``: whether parameters outside gated weights and BatchNorm
    (biases, other layers) may move; MIND trains them in the first experience only.
    ``batchnorm_trainable``: whether BatchNorm affine parameters may move.
    """
    gated_weights = {id(layer.weight): layer for layer in ownership.layers.values()}
    batchnorm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters(recurse=False)
    }
    entries: List[Tuple[nn.Parameter, Optional[Tensor]]] = []
    for param in model.parameters():
        layer = gated_weights.get(id(param))
        if layer is not None:
            entries.append((param, ownership.owned_by(layer, owner)))
        elif id(param) in batchnorm_params:
            if not batchnorm_trainable:
                entries.append((param, None))
        elif not shared_trainable:
            entries.append((param, None))
    return WeightGuard(entries)


class GatingPlugin(SupervisedPlugin):
    """Gates the distillation phase to the current experience's sub-network."""

    def __init__(self) -> None:
        super().__init__()
        self.guard: Optional[WeightGuard] = None

    def before_training_exp(self, strategy: "MIND", **kwargs) -> None:
        task = strategy.current_task
        strategy.ownership.activate(task, strategy.weight_sharing)
        self.guard = guard_for(
            strategy.model,
            strategy.ownership,
            owner=task,
            shared_trainable=task == 0,
            batchnorm_trainable=strategy.bn_per_task or task == 0,
        )

    def after_backward(self, strategy: "MIND", **kwargs) -> None:
        self.guard.zero_frozen_grads()

    def after_update(self, strategy: "MIND", **kwargs) -> None:
        self.guard.restore()

    def after_training_exp(self, strategy: "MIND", **kwargs) -> None:
        self.guard = None
