"""The validation split the baselines are tuned on: part of each training experience, never the test stream.

Every training experience is split, class by class and seeded, into a training part
and a validation part (:data:`VALIDATION_FRACTION` of each class); the validation
parts become the test stream of a benchmark of their own, so the runner's code
trains and scores a baseline on it unchanged (:mod:`avalanche_mind.runner.tuning`).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import torch

from avalanche_mind.runner.streams import rebuilt

VALIDATION_FRACTION = 0.15
"""Share of each class of each training experience held out for validation."""
SPLIT_SEED = 0
"""Seed of the validation split (experience ``i`` uses ``SPLIT_SEED + i``); training seeds are separate."""


def split_indices(targets: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(training, validation) positions in ``targets``: ``fraction`` of each class, drawn with ``seed``.

    A class with two samples or more gives at least one to validation and keeps at least one.
    """
    generator = torch.Generator().manual_seed(seed)
    by_class: Dict[int, List[int]] = defaultdict(list)
    for position, target in enumerate(targets):
        by_class[int(target)].append(position)
    held = set()
    for positions in (by_class[c] for c in sorted(by_class)):
        n = len(positions)
        k = min(max(round(fraction * n), 1), n - 1) if n > 1 else 0
        held.update(positions[j] for j in torch.randperm(n, generator=generator)[:k].tolist())
    return [i for i in range(len(targets)) if i not in held], sorted(held)


def validation_benchmark(benchmark, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED):
    """The training stream, each experience split: a benchmark whose test stream is the validation split.

    The test stream of ``benchmark`` is never read. Each part keeps its experience's
    transforms (training augmentation, evaluation transform when evaluated).
    """
    train, validation = [], []
    for i, experience in enumerate(benchmark.train_stream):
        data = experience.dataset
        keep, held = split_indices(list(data.targets), fraction, seed + i)
        train.append(data.subset(keep))
        validation.append(data.subset(held))
    return rebuilt(train, validation)
