"""BatchNorm snapshots: each experience keeps its own BatchNorm statistics and affine terms.

BatchNorm is trained with every experience and stored after it; inference with
sub-network t uses snapshot t. With ``bn_per_task=False`` (the paper's ablation)
BatchNorm is trained on the first experience only and frozen afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import Tensor, nn

from avalanche_mind.core.layers import batchnorm_modules


def batchnorm_state(model: nn.Module) -> Dict[str, Tensor]:
    """A detached copy of every BatchNorm parameter and buffer, keyed by full name."""
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in batchnorm_modules(model)
        for key, value in module.state_dict().items()
    }


@torch.no_grad()
def load_batchnorm_state(model: nn.Module, snapshot: Dict[str, Tensor]) -> None:
    for name, module in batchnorm_modules(model):
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in snapshot.items() if k.startswith(prefix)})


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


def freeze_batchnorm_to(model: nn.Module, snapshot: Dict[str, Tensor]) -> None:
    """Load ``snapshot`` and keep its running statistics fixed while training (``bn_per_task=False``).

    MIND calls this with experience 0's snapshot before gating (the weight guard then
    copies these affine terms as the frozen ones): a self-distillation teacher may
    have moved BatchNorm.
    """
    load_batchnorm_state(model, snapshot)
    for _, module in batchnorm_modules(model):
        module.eval()
