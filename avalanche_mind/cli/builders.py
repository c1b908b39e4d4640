"""The benchmark and the model a command runs on, from the registries, with user errors as one line."""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

from torch import nn

from avalanche_mind.core.state import experience_classes
from avalanche_mind.data.registry import load_benchmark
from avalanche_mind.models import registry
from avalanche_mind.preflight import CLIError


def build_benchmark(name: str, data_root: Optional[str], kwargs: Dict[str, Any]):
    """The benchmark registered as ``name``, or a user's ``package.module:function`` (:mod:`~avalanche_mind.data`)."""
    try:
        return load_benchmark(name, data_root, **kwargs)
    except TypeError as error:
        raise CLIError(f"benchmark {name!r} does not accept these --benchmark-arg values: {error}") from error


def benchmark_shape(benchmark) -> Dict[str, int]:
    """Number of classes and input channels/size of a benchmark."""
    stream = benchmark.train_stream
    n_classes = getattr(benchmark, "n_classes", None)
    if not isinstance(n_classes, int):  # e.g. benchmark_from_datasets: each experience's classes, as MIND reads them
        n_classes = max(max(experience_classes(e), default=0) for e in [*stream, *benchmark.test_stream]) + 1
    x = stream[0].dataset[0][0]
    return {"num_classes": int(n_classes), "in_channels": int(x.shape[0]), "image_size": int(x.shape[-1])}


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, kwargs: Dict[str, Any]) -> nn.Module:
    """The gated model registered as ``name`` (:mod:`avalanche_mind.models.registry`); ``auto`` by input size."""
    name = registry.resolve_model(name, image_size)  # an unknown name: ValueError, one line
    with warnings.catch_warnings():  # a zero width is reported by MIND, in one line
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors", category=UserWarning)
        try:
            return registry.build_model(name, num_classes, in_channels, **kwargs)
        except TypeError as error:
            raise CLIError(f"model {name!r} does not accept these --model-arg values: {error}") from error
        except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as error:
            raise CLIError(f"model {name!r} cannot be built with --model-arg {kwargs}: {error}") from error
