"""Gated layers: a Conv2d/Linear whose forward pass multiplies its weight by a mask.

The mask selects one sub-network (see :mod:`avalanche_mind.ownership`). Each gated
layer also carries ``owner``, the small-integer ownership map of its weights, as a
persistent buffer, so it is saved and loaded with the model's ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FREE = -1
"""Owner value of a weight that no experience owns yet."""


def _add_gate_buffers(layer: nn.Module) -> None:
    # ``mask`` starts as a scalar one: an ungated layer behaves exactly like the
    # dense one until a sub-network is activated. It is not persistent because it
    # is derived from ``owner`` and the active task.
    layer.register_buffer(
        "owner",
        torch.full(layer.weight.shape, FREE, dtype=torch.int8, device=layer.weight.device),
    )
    layer.register_buffer("mask", torch.ones((), device=layer.weight.device), persistent=False)


class GatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is multiplied by the active sub-network's mask."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _add_gate_buffers(self)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class GatedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by the active sub-network's mask."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _add_gate_buffers(self)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


GatedLayer = Union[GatedConv2d, GatedLinear]
_GATED_FOR = {nn.Conv2d: GatedConv2d, nn.Linear: GatedLinear}


def gated_layers(model: nn.Module) -> Iterator[Tuple[str, GatedLayer]]:
    """The gated layers of ``model`` in registration order, with their names."""
    for name, module in model.named_modules():
        if isinstance(module, (GatedConv2d, GatedLinear)):
            yield name, module


def gate_model(model: nn.Module) -> nn.Module:
    """Turn every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` into its gated twin, in place.

    Weights, biases, devices and hooks are kept: only the class of each layer
    changes and two buffers are added. Subclasses of Conv2d/Linear with their own
    forward (for example the projection inside ``nn.MultiheadAttention``) are left
    dense, because gating their weight would not reach their computation.
    Returns ``model`` for chaining.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"gate_model expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        gated_cls = _GATED_FOR.get(type(module))
        if gated_cls is not None:
            module.__class__ = gated_cls
            _add_gate_buffers(module)
    if next(gated_layers(model), None) is None:
        raise TypeError(
            f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer, so MIND has no "
            "weights to share between experiences; build the model from Conv2d/Linear "
            "layers (or use avalanche_mind.gresnet32)."
        )
    return model


def he_normal_(weight: Tensor, positions: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> None:
    """He-normal (fan-in, ReLU gain) initialisation of ``weight``, or only of its flat ``positions``."""
    fan_in = weight[0].numel() if weight.dim() > 1 else weight.numel()
    std = math.sqrt(2.0 / fan_in)
    with torch.no_grad():
        if positions is None:
            weight.copy_(torch.randn(weight.shape, generator=generator, device="cpu").to(weight) * std)
        else:
            values = torch.randn(positions.numel(), generator=generator, device="cpu").to(weight) * std
            weight.view(-1)[positions] = values


def reinitialise(model: nn.Module, generator: Optional[torch.Generator] = None) -> None:
    """Fresh random weights for every layer: He normal for gated layers, defaults elsewhere."""
    for module in model.modules():
        if isinstance(module, (GatedConv2d, GatedLinear)):
            he_normal_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
