"""Data-parallel MIND under ``torchrun``: what every rank must agree on, and how it is kept so.

MIND does not wrap its model in ``DistributedDataParallel``: the gated layers'
ownership map, the weight guard and the BatchNorm snapshots address the model's
own modules, and checkpoints name its own parameters. Instead each rank trains the
same model on its shard of every experience (a ``DistributedSampler``) and:

- gradients are averaged across ranks right after ``backward``, before the weight
  guard zeroes the frozen ones (teacher and distillation phases alike), so every
  optimiser step is the same on every rank and frozen weights stay bit-identical;
- BatchNorm running statistics are averaged across ranks at the end of each phase,
  before the teacher's logits are recorded and before the snapshot is stored (the
  mean of the ranks' running variances: exact for the means, an approximation of the
  pooled variance that ignores the spread between the shards' means);
- the start (weights, ownership map, allocation generator) is checked identical on
  every rank; a difference means the ranks were not seeded alike, and is refused.

Steps that need the whole experience (teacher logits, score statistics) and
evaluation run on every rank on all the data, so their results are identical
without gathering; only rank 0 writes checkpoints, results and W&B. Rank, world
size and initialisation come from Avalanche's ``DistributedHelper``.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import os
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from avalanche.distributed import DistributedHelper
from avalanche.distributed import distributed_helper as _helper
from torch import nn
from torch.utils.data import DistributedSampler

from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.settings import DEFAULT_TIMEOUT_S  # how long a rank waits in one collective


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and logs."""
    return DistributedHelper.is_main_process




def init_from_environment(seed: int, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL on GPU); False when not under torchrun.

    ``timeout_s``: a rank that waits longer than this on a frozen or dead peer fails with
    torch's timeout error instead of hanging silently.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = str(device).startswith("cuda")
    original = _helper.init_process_group  # Avalanche calls it without a timeout: give it ours
    _helper.init_process_group = functools.partial(original, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        return bool(DistributedHelper.init_distributed(seed, backend="nccl" if use_cuda else "gloo",
                                                       use_cuda=use_cuda))
    finally:
        _helper.init_process_group = original


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """All-reduce (mean) every gradient across ranks; a no-op in a single process."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


@torch.no_grad()
def average_batchnorm_statistics(model: nn.Module) -> None:
    """All-reduce (mean) BatchNorm running means and variances across ranks; a no-op in a single process."""
    if not is_distributed():
        return
    for _, module in batchnorm_modules(model):
        for buffer in (module.running_mean, module.running_var):
            if buffer is not None:
                dist.all_reduce(buffer)
                buffer /= dist.get_world_size()


def _digest(model: nn.Module, generator: torch.Generator) -> str:
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(generator.get_state().numpy().tobytes())
    return h.hexdigest()


def check_same_start(model: nn.Module, generator: torch.Generator) -> None:
    """Refuse to train when the ranks hold different weights, ownership maps or allocation generators."""
    if not is_distributed():
        return
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, _digest(model, generator))
    if len(set(digests)) != 1:
        raise RuntimeError(
            "data-parallel MIND: the ranks start from different weights, ownership maps or allocation "
            f"generators (digests {[d[:8] for d in digests]}). Seed every rank alike before building the "
            "model and MIND (e.g. torch.manual_seed(seed) and MIND(..., seed=seed))."
        )


def shard_sampler(dataset, shuffle: bool, seed: int) -> Optional[DistributedSampler]:
    """This rank's share of ``dataset`` (the same permutation on every rank), or None in a single process."""
    if not is_distributed():
        return None
    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=False)


def set_epoch(loader, epoch: int) -> None:
    """A new shuffle per epoch for a sharded loader (``DistributedSampler.set_epoch``)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


__all__ = [
    "average_batchnorm_statistics",
    "average_gradients",
    "check_same_start",
    "init_from_environment",
    "is_distributed",
    "is_main_process",
    "set_epoch",
    "shard_sampler",
]
