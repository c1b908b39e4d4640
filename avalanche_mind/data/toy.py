"""A tiny generated image benchmark for tests and smoke runs (no download, seconds to build).

Each class is a fixed random smooth pattern; samples add noise and a random shift.
Domains (domain-incremental) change the colour mixing and noise level, so the
same classes look different in each experience.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.benchmarks import benchmark_from_datasets, nc_benchmark, with_classes_timeline, with_task_labels
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_tensor_classification_dataset as _tensor_dataset,
)
from torch.utils.data import TensorDataset


def _prototypes(n_classes: int, size: int, generator: torch.Generator) -> torch.Tensor:
    low = torch.randn(n_classes, 3, 4, 4, generator=generator)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def _samples(protos, labels, noise, generator, colour=None):
    x = protos[labels]
    if colour is not None:
        x = torch.einsum("ij,njhw->nihw", colour, x)
    shifts = torch.randint(-2, 3, (len(labels), 2), generator=generator)
    x = torch.stack([torch.roll(img, tuple(s.tolist()), dims=(1, 2)) for img, s in zip(x, shifts)])
    return x + noise * torch.randn(x.shape, generator=generator)


def toy_class_incremental(
    n_experiences: int = 5, classes_per_experience: int = 2, per_class: int = 60, test_per_class: int = 30,
    image_size: int = 16, noise: float = 0.8, seed: int = 0,
):
    """Class-incremental stream of ``n_experiences`` x ``classes_per_experience`` classes."""
    g = torch.Generator().manual_seed(seed)
    n_classes = n_experiences * classes_per_experience
    protos = _prototypes(n_classes, image_size, g)
    y_train = torch.arange(n_classes).repeat_interleave(per_class)
    y_test = torch.arange(n_classes).repeat_interleave(test_per_class)
    train = TensorDataset(_samples(protos, y_train, noise, g), y_train)
    test = TensorDataset(_samples(protos, y_test, noise, g), y_test)
    return nc_benchmark(train, test, n_experiences=n_experiences, task_labels=False,
                        fixed_class_order=list(range(n_classes)))


def toy_domain_incremental(
    n_domains: int = 3, n_classes: int = 4, per_class: int = 60, test_per_class: int = 30,
    image_size: int = 16, seed: int = 0,
):
    """Domain-incremental stream: the same ``n_classes`` in every experience, a new look in each.

    Every experience carries task label 0 (``with_task_labels``), as the glyph domain
    benchmarks' do: Avalanche's PackNet reads ``experience.task_labels``.
    """
    g = torch.Generator().manual_seed(seed)
    protos = _prototypes(n_classes, image_size, g)
    train, test = [], []
    for _ in range(n_domains):
        colour = torch.randn(3, 3, generator=g)
        noise = 0.3 + 0.5 * float(torch.rand((), generator=g))
        for split, per in ((train, per_class), (test, test_per_class)):
            y = torch.arange(n_classes).repeat_interleave(per)
            split.append(_tensor_dataset(_samples(protos, y, noise, g, colour), y, task_labels=0))
    return with_task_labels(with_classes_timeline(benchmark_from_datasets(train=train, test=test)))
