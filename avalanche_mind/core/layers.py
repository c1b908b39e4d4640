"""Gated layers: a Conv2d/Linear whose forward pass multiplies its weight by a mask.

The mask selects one sub-network (see :mod:`avalanche_mind.core.ownership`). Each gated
layer also carries ``owner``, the small-integer ownership map of its weights, as a
persistent buffer, so it is saved and loaded with the model's ``state_dict``.

Gated attention: ``nn.MultiheadAttention`` keeps its input projection as raw
parameters (``in_proj_weight``, or ``q/k/v_proj_weight``) and reads ``out_proj``'s
weight directly, bypassing any module forward: gating ``out_proj`` as a Linear would
not reach the computation, and the input projection would be trained by experience
0 and then frozen for good. :func:`gate_model` therefore turns such a module, in
place, into a :class:`GatedMultiheadAttention` whose projections are
:class:`GatedLinear` children (``in_proj``, or ``q_proj``/``k_proj``/``v_proj``, and
``out_proj``): the ownership map, the weight guard, the bank of sub-networks and
checkpoints treat them as any other gated layer. Its forward is
``nn.MultiheadAttention``'s general path with the masked weights. It keeps its
class's attributes (``batch_first``, ``num_heads``, ...); its ``in_proj_bias`` is
None, so the inference fast paths of ``nn.TransformerEncoderLayer`` and
``nn.TransformerEncoder``, which read the raw parameters, are never taken.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind.errors import few

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


def _gated_linear(weight: Tensor, bias: Optional[Tensor]) -> GatedLinear:
    """A GatedLinear holding copies of ``weight`` (out x in) and ``bias``, trainable as they were."""
    layer = GatedLinear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                        dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.weight.requires_grad_(weight.requires_grad)
    if bias is not None:
        layer.bias.requires_grad_(bias.requires_grad)
    return layer


def _masked(layer: nn.Linear) -> Tensor:
    """A projection's weight times its mask (a plain Linear, after :func:`ungate`: its weight)."""
    mask = getattr(layer, "mask", None)
    return layer.weight if mask is None else layer.weight * mask


class GatedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with gated projections (made by :func:`gate_attention`, not constructed)."""

    def projection_weights(self) -> Tuple[Optional[Tensor], Optional[Tensor], Tuple[Optional[Tensor], ...]]:
        """The masked input projection (packed weight, bias) or the three separate ones."""
        if self._qkv_same_embed_dim:
            return _masked(self.in_proj), self.in_proj.bias, (None, None, None)
        projections = (self.q_proj, self.k_proj, self.v_proj)
        biases = [p.bias for p in projections]
        bias = torch.cat(biases) if all(b is not None for b in biases) else None
        return None, bias, tuple(_masked(p) for p in projections)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        batched = query.dim() == 3
        if self.batch_first and batched:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
        in_weight, in_bias, (q_weight, k_weight, v_weight) = self.projection_weights()
        output, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, in_weight, in_bias, self.bias_k, self.bias_v,
            self.add_zero_attn, self.dropout, _masked(self.out_proj), self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, use_separate_proj_weight=not self._qkv_same_embed_dim, q_proj_weight=q_weight,
            k_proj_weight=k_weight, v_proj_weight=v_weight, average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
        if self.batch_first and batched:
            output = output.transpose(1, 0)
        return output, weights


def gate_attention(module: nn.MultiheadAttention) -> GatedMultiheadAttention:
    """Turn ``module`` into a :class:`GatedMultiheadAttention` in place, keeping its weights' values.

    The projections become new :class:`GatedLinear` children (new parameter objects:
    an optimiser built before gating does not see them; MIND builds its own after).
    """
    if module._qkv_same_embed_dim:
        module.in_proj = _gated_linear(module.in_proj_weight, module.in_proj_bias)
    else:
        bias = module.in_proj_bias
        e = module.embed_dim
        parts = (None, None, None) if bias is None else (bias[:e], bias[e:2 * e], bias[2 * e:])
        module.q_proj = _gated_linear(module.q_proj_weight, parts[0])
        module.k_proj = _gated_linear(module.k_proj_weight, parts[1])
        module.v_proj = _gated_linear(module.v_proj_weight, parts[2])
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            module.register_parameter(name, None)
    module.register_parameter("in_proj_weight", None)
    module.register_parameter("in_proj_bias", None)
    module.out_proj.__class__ = GatedLinear
    _add_gate_buffers(module.out_proj)
    module.__class__ = GatedMultiheadAttention
    return module


def gated_layers(model: nn.Module) -> Iterator[Tuple[str, GatedLayer]]:
    """The gated layers of ``model`` in registration order, with their names."""
    for name, module in model.named_modules():
        if isinstance(module, (GatedConv2d, GatedLinear)):
            yield name, module


def gate_model(model: nn.Module) -> nn.Module:
    """Turn every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` into its gated twin, in place.

    Weights, biases, devices and hooks are kept: only the class of each layer
    changes and two buffers are added. ``nn.MultiheadAttention`` becomes a
    :class:`GatedMultiheadAttention` (its projections gated; see the module's
    docstring). Other subclasses of Conv2d/Linear with their own forward are left
    dense, because gating their weight would not reach their computation
    (:func:`account_parameters` refuses them).
    Returns ``model`` for chaining.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"gate_model expects a torch.nn.Module, got {type(model).__name__}")
    for module in list(model.modules()):
        if type(module) is nn.MultiheadAttention:
            gate_attention(module)
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
            f"the model is only partly gated: {few(plain)} are plain nn.Conv2d/nn.Linear layers, which MIND neither splits between "
            "experiences nor protects (experience 0 would train them, later ones would find "
            "them frozen). Gate the whole model: avalanche_mind.gate_model(model) gates the "
            "remaining layers and keeps the gated ones."
        )
    return model


def ungate(model: nn.Module) -> nn.Module:
    """Undo :func:`gate_model` in place: plain Conv2d/Linear, same weights.

    A :class:`GatedMultiheadAttention` keeps its projections as (now plain) Linear
    children: the same computation, and the same names as the gated model's layers.
    """
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
