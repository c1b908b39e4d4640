"""Gated layers: a Conv2d/Linear whose forward pass multiplies its weight by a mask.

The mask selects one sub-network (see :mod:`avalanche_mind.core.ownership`). Each gated
layer also carries ``owner``, the small-integer ownership map of its weights, as a
persistent buffer, so it is saved and loaded with the model's ``state_dict``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FREE = -1
"""Owner value of a weight that no experience owns yet."""

PACKED_OWNER_MAX = 14
"""Largest experience id :func:`pack_owner` can store (4 bits hold FREE and ids 0..14)."""


def _add_gate_buffers(layer: nn.Module) -> None:
    # ``mask`` starts as a scalar one: an ungated layer behaves exactly like the
    # dense one until a sub-network is activated. It is not persistent because it
    # is derived from ``owner`` and the active task.
    layer.register_buffer(
        "owner",
        torch.full(layer.weight.shape, FREE, dtype=torch.int8, device=layer.weight.device),
    )
    layer.register_buffer("mask", torch.ones((), device=layer.weight.device), persistent=False)


def pack_owner(owner: Tensor) -> Tensor:
    """Two owner ids per byte: a flat uint8 tensor of ``ceil(numel / 2)`` entries.

    Needs every id in ``FREE..PACKED_OWNER_MAX`` (at most 15 experiences); the
    shape is not stored, the layer that loads it knows it. Exact inverse:
    :func:`unpack_owner`.
    """
    flat = owner.detach().reshape(-1).to(torch.int16) - FREE  # 0..15
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > PACKED_OWNER_MAX - FREE):
        raise ValueError(f"owner ids must lie in [{FREE}, {PACKED_OWNER_MAX}] to be packed in 4 bits")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.view(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def unpack_owner(packed: Tensor, shape: Union[torch.Size, Tuple[int, ...]], dtype: torch.dtype = torch.int8) -> Tensor:
    """The owner tensor of ``shape`` stored by :func:`pack_owner`."""
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 1) // 2:
        raise ValueError(f"not a packed owner map of {numel} weights: {packed.dtype} {tuple(packed.shape)}")
    wide = packed.to(torch.int16)
    flat = torch.stack([wide & 15, wide >> 4], dim=1).reshape(-1)[:numel] + FREE
    return flat.to(dtype).reshape(shape)


def _is_packed_owner(value: Any, owner: Tensor) -> bool:
    return (
        isinstance(value, Tensor)
        and value.dtype == torch.uint8
        and value.dim() == 1
        and value.numel() == (owner.numel() + 1) // 2
    )


def _owner_overflows(value: Any, dtype: torch.dtype) -> bool:
    """Whether the integer tensor ``value`` holds ids outside the range of ``dtype``."""
    if not isinstance(value, Tensor) or not value.numel() or value.is_floating_point() or value.dtype == dtype:
        return False
    limits = torch.iinfo(dtype)
    return int(value.min()) < limits.min or int(value.max()) > limits.max


class _GateState:
    """Loading side of :func:`compact_state_dict`: a packed ``owner`` entry is unpacked; ids too wide are refused."""

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "owner"
        owner = getattr(self, "owner", None)
        value = state_dict.get(key)
        if owner is not None and _is_packed_owner(value, owner):
            # ``load_state_dict`` hands every module its own shallow copy of the dict.
            state_dict[key] = unpack_owner(value, owner.shape, owner.dtype).to(owner.device)
        elif owner is not None and _owner_overflows(value, owner.dtype):
            # Copied into this buffer, the ids would wrap around (200 becomes -56 in int8): refuse.
            error_msgs.append(
                f"{key}: owner ids from {int(value.min())} to {int(value.max())} do not fit this layer's "
                f"{owner.dtype} ownership map; give the model the owner dtype of the checkpoint's n_experiences "
                "before loading (avalanche_mind.core.ownership.set_owner_dtype, or build its OwnershipMap)"
            )
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class GatedConv2d(_GateState, nn.Conv2d):
    """``nn.Conv2d`` whose weight is multiplied by the active sub-network's mask."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _add_gate_buffers(self)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class GatedLinear(_GateState, nn.Linear):
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


def ensure_gated(model: nn.Module) -> nn.Module:
    """Gate ``model`` in place unless it already is; refuse a model only partly gated.

    A plain Conv2d/Linear beside gated layers would be neither split between
    experiences nor protected: experience 0 would train it, later ones find it frozen.
    """
    empty = [f"{name} has shape {list(p.shape)}" for name, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise ValueError(
            f"the model has empty layers ({', '.join(empty[:3])}): every layer needs at least one "
            "weight; check the model's size arguments (e.g. width >= 1)"
        )
    if next(gated_layers(model), None) is None:
        return gate_model(model)
    plain = [repr(name or type(model).__name__) for name, module in model.named_modules()
             if type(module) in (nn.Conv2d, nn.Linear)]
    if plain:
        raise ValueError(
            f"the model is only partly gated: {', '.join(plain[:5])}"
            + (f" and {len(plain) - 5} more" if len(plain) > 5 else "")
            + " are plain nn.Conv2d/nn.Linear layers, which MIND neither splits between "
            "experiences nor protects (experience 0 would train them, later ones would find "
            "them frozen). Gate the whole model: avalanche_mind.gate_model(model) gates the "
            "remaining layers and keeps the gated ones."
        )
    return model


def ungate(model: nn.Module) -> nn.Module:
    """Undo :func:`gate_model` in place: plain Conv2d/Linear, same weights."""
    for module in model.modules():
        if isinstance(module, (GatedConv2d, GatedLinear)):
            module.__class__ = nn.Conv2d if isinstance(module, GatedConv2d) else nn.Linear
            del module._buffers["owner"]
            del module._buffers["mask"]
            module._non_persistent_buffers_set.discard("mask")
    return model


def batchnorm_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Every BatchNorm layer of ``model`` with its full name, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def compact_state_dict(model: nn.Module) -> Dict[str, Tensor]:
    """``model.state_dict()`` with every gated layer's ``owner`` packed to 4 bits where it fits.

    A layer whose ids all lie in ``FREE..PACKED_OWNER_MAX`` (15 experiences or
    fewer) stores two owners per byte instead of one: the ownership map costs
    1/8 of the float32 weights instead of 1/4. Other layers keep their int8/int16
    map. ``model.load_state_dict`` reads both forms, so a checkpoint written from
    this dict loads into a freshly gated model as usual.
    """
    state = model.state_dict()
    for name, layer in gated_layers(model):
        key = f"{name}.owner" if name else "owner"
        owner = state.get(key)
        if owner is None or not owner.numel():
            continue
        if FREE <= int(owner.min()) and int(owner.max()) <= PACKED_OWNER_MAX:
            state[key] = pack_owner(owner)
    return state


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
