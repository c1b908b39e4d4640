"""Per-experience tensors: what each experience keeps its own copy of, and where every parameter belongs.

After gating, every parameter of the model is exactly one of:

- **gated**: the weight of a gated layer (``GatedConv2d``, ``GatedLinear``, the
  projections of ``GatedMultiheadAttention``), split between experiences by the
  ownership map;
- **per-experience**: trained with every experience and stored after it, like the
  paper's BatchNorm snapshots: normalisation layers (BatchNorm, InstanceNorm,
  LayerNorm, GroupNorm, RMSNorm: affine terms and running statistics), the gated
  layers' biases, and free parameters of the model's own modules (a class token, a
  position embedding, attention's ``bias_k``/``bias_v``); sub-network t runs with
  experience t's copy. Every other buffer of the model is in the copy too;
- **refused** before training, by name (:func:`account_parameters`): the weight of a
  torch layer MIND cannot split between experiences (``Conv1d``, ``Embedding``,
  ``LSTM``, ...), or of a Linear/Conv2d subclass with its own forward. Kept whole per
  experience it would cost a full copy each; trained by experience 0 alone it would
  be silently frozen for the others.

With ``bn_per_task=False`` (the paper's ablation) the per-experience tensors are
trained with the first experience only and frozen afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import Tensor, nn

from avalanche_mind.core.layers import GatedConv2d, GatedLinear, GatedMultiheadAttention, batchnorm_modules
from avalanche_mind.errors import few

NORMALISATION = tuple(
    cls for cls in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None))
    if cls is not None
)
"""Layers whose affine terms (and statistics) every experience keeps its own copy of."""

GATED, PER_EXPERIENCE = "gated", "per-experience"


def account_parameters(model: nn.Module) -> Dict[str, str]:
    """Every parameter of the gated ``model`` by name: ``"gated"`` or ``"per-experience"``.

    Raises ValueError naming each parameter MIND cannot handle, and the fix.
    """
    kinds: Dict[str, str] = {}
    refused = []
    for module_name, module in model.named_modules():
        for key, param in module.named_parameters(recurse=False):
            name = f"{module_name}.{key}" if module_name else key
            if isinstance(module, (GatedConv2d, GatedLinear)):
                kinds[name] = GATED if key == "weight" else PER_EXPERIENCE
            elif isinstance(module, (*NORMALISATION, nn.PReLU, GatedMultiheadAttention)) or not _torch_layer(module):
                kinds[name] = PER_EXPERIENCE  # norms, attention's bias_k/bias_v, the model's own parameters
            else:
                refused.append(f"{name} ({type(module).__name__})")
    if refused:
        raise ValueError(
            f"MIND cannot split these parameters between experiences: {few(refused)}. MIND gates nn.Conv2d, nn.Linear and nn.MultiheadAttention and keeps a per-experience copy of "
            "normalisation layers and of the model's own small parameters; build these layers from "
            "Conv2d/Linear (e.g. a 1x1 Conv2d for a Conv1d, a Linear on one-hot inputs for an Embedding)."
        )
    return kinds


def _torch_layer(module: nn.Module) -> bool:
    """Whether ``module`` is one of torch's layers (or a subclass of one), whose computation MIND cannot gate."""
    return any(cls.__module__.startswith("torch.nn") and cls is not nn.Module for cls in type(module).__mro__[:-1])


def per_experience_tensors(model: nn.Module) -> Dict[str, Tensor]:
    """Name -> tensor of every entry of the state dict that is not a gated weight or an ownership map."""
    gated = set()
    for name, module in model.named_modules():
        if isinstance(module, (GatedConv2d, GatedLinear)):
            gated.update({f"{name}.weight" if name else "weight", f"{name}.owner" if name else "owner"})
    saved = model.state_dict(keep_vars=True).keys()  # persistent entries only (not the masks)
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {k: v for k, v in tensors.items() if k not in gated and k in saved}


def experience_state(model: nn.Module) -> Dict[str, Tensor]:
    """A detached copy of every per-experience tensor of ``model`` (its snapshot), keyed by full name."""
    return {name: value.detach().clone() for name, value in per_experience_tensors(model).items()}


@torch.no_grad()
def load_experience_state(model: nn.Module, snapshot: Dict[str, Tensor]) -> None:
    """Copy ``snapshot`` (from :func:`experience_state`) into ``model``'s tensors."""
    tensors = per_experience_tensors(model)
    for name, value in snapshot.items():
        tensors[name].copy_(value)


@contextmanager
def frozen_running_statistics(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm (batch statistics) that leaves the running statistics unchanged.

    For passes on inputs that are not the task's own (rotated surrogates): momentum
    0 keeps the running mean and variance exactly as they were.
    """
    saved = [(m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for _, m in batchnorm_modules(model)]
    for module, _, _ in saved:
        module.momentum = 0.0
    try:
        yield
    finally:
        for module, momentum, tracked in saved:
            module.momentum = momentum
            if tracked is not None:
                module.num_batches_tracked.copy_(tracked)


def freeze_to(model: nn.Module, snapshot: Dict[str, Tensor]) -> None:
    """Load ``snapshot`` and keep its running statistics fixed while training (``bn_per_task=False``).

    MIND calls this with experience 0's snapshot before gating (the weight guard then
    copies these tensors as the frozen ones): a self-distillation teacher may have moved them.
    """
    load_experience_state(model, snapshot)
    for _, module in batchnorm_modules(model):
        module.eval()
