"""The benchmark as every strategy of the runner can train on it, and its description.

Avalanche's own strategies read more of an experience than MIND does: ``PackNetModel``'s
adaptation reads ``experience.classes_in_this_experience`` and ``task_labels``, LwF reads
``dataset.targets_task_labels`` and ``task_set``. A benchmark built with
``benchmark_from_datasets`` has none of them unless ``with_classes_timeline``,
``with_task_labels`` and task-labelled datasets were used, so :func:`runnable` rebuilds
such a benchmark from the same datasets with all of them (task label 0 where a dataset
has none): one place, rather than each strategy working around it.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from avalanche.benchmarks import benchmark_from_datasets, with_classes_timeline, with_task_labels
from avalanche.benchmarks.utils.classification_dataset import TaskAwareClassificationDataset
from avalanche.benchmarks.utils.data_attribute import DataAttribute
from avalanche.benchmarks.utils.flat_data import ConstantSequence

from avalanche_mind.core.state import experience_classes


def task_labelled(dataset):
    """``dataset`` as a task-aware dataset (task label 0 for every sample, returned by indexing) unless it is one
    already; its transforms are kept."""
    if hasattr(dataset, "targets_task_labels"):
        return dataset
    labels = DataAttribute(ConstantSequence(0, len(dataset)), "targets_task_labels", use_in_getitem=True)
    return TaskAwareClassificationDataset([dataset], data_attributes=[labels])


def rebuilt(train: Sequence[Any], test: Sequence[Any]):
    """A benchmark of these training and test datasets, one experience each, with classes and task labels."""
    return with_task_labels(with_classes_timeline(benchmark_from_datasets(
        train=[task_labelled(d) for d in train], test=[task_labelled(d) for d in test])))


def _complete(experience) -> bool:
    return all(hasattr(experience, name) for name in ("classes_in_this_experience", "task_labels")) \
        and hasattr(experience.dataset, "targets_task_labels")


def runnable(benchmark):
    """``benchmark`` itself when its experiences have classes and task labels, else it rebuilt with them."""
    streams = (benchmark.train_stream, benchmark.test_stream)
    if all(_complete(e) for stream in streams for e in stream):
        return benchmark
    return rebuilt(*([e.dataset for e in stream] for stream in streams))


def describe_stream(benchmark) -> Dict[str, Any]:
    """Number of experiences, classes, input channels and the scenario (class or domain)."""
    train = list(benchmark.train_stream)
    classes = [experience_classes(e) for e in train]
    test_classes = [experience_classes(e) for e in benchmark.test_stream]
    first_x = train[0].dataset[0][0]
    domain = len(train) > 1 and all(set(c) == set(classes[0]) for c in classes)
    return {
        "n_experiences": len(train),
        "n_test_experiences": len(test_classes),
        "num_classes": max(max(c) for c in classes + test_classes if c) + 1,
        "in_channels": int(first_x.shape[0]),
        "input_shape": list(first_x.shape),
        "scenario": "domain" if domain else "class",
        "classes_per_experience": [len(c) for c in classes],
        "train_sizes": [len(e.dataset) for e in train],
        "test_sizes": [len(e.dataset) for e in benchmark.test_stream],
    }
