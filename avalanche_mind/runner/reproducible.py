"""What makes a run's figures reproducible, shared by the comparison runner and ``avalanche-mind train``.

Both build in the same order: the benchmark first (benchmarks are generated from
their own ``seed`` keyword and draw nothing from the global generators), then
:func:`seed_everything`, then the model and the strategy, under the same torch
thread count (:func:`set_threads`). So the same seed gives the same initial
weights, ownership map, data order and arithmetic in both, whatever ran before in
the process (another strategy, another seed; evaluations run inside
:func:`avalanche_mind.io.random_state.training_rng_kept`).
"""
from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (and every CUDA device's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_threads(threads: Optional[int], device: str) -> Optional[int]:
    """``threads``, else 1 on CPU; None (torch's default) on a GPU.

    The count is part of a run's result, not only its speed: CPU kernels split their
    sums by thread, so the same seed gives other figures under another count
    (glyphs-cpu at 1+1 epochs: TAg 17.3% with 1 thread, 14.9% with 2). One thread is
    also the fast choice for these small models on a shared machine, where OpenMP's
    spinning threads slow down 5-8x when the cores are busy.
    """
    if threads is not None:
        return threads
    return 1 if str(device) == "cpu" else None


def set_threads(threads: Optional[int], device: str) -> int:
    """Apply :func:`default_threads`; returns torch's thread count."""
    count = default_threads(threads, device)
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()

