"""A user's own benchmark, named ``package.module:function`` wherever a built-in benchmark's name is taken.

The function is imported and called with the benchmark's keyword arguments (``--benchmark-arg``,
``--set benchmark_kwargs.KEY=VALUE``) and must return an Avalanche benchmark (``nc_benchmark``,
``ni_benchmark``, ``benchmark_from_datasets``...) of image tensors. Whatever goes wrong on the way is one
:class:`UserBenchmarkError` naming the spec and the cause, so that the command line reports it in one line
instead of a traceback from the user's module.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Tuple

import torch
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario

SEPARATOR = ":"


class UserBenchmarkError(ValueError):
    """A ``module:function`` benchmark that cannot be imported, called or used (a user error)."""


def is_user_benchmark(name: str) -> bool:
    """Whether ``name`` is a ``package.module:function`` spec rather than a built-in name."""
    return SEPARATOR in name


def parse_spec(spec: str) -> Tuple[str, str]:
    """``(module, function)`` of a spec; UserBenchmarkError for one that is not ``package.module:function``."""
    module, _, function = spec.partition(SEPARATOR)
    if not all(part.isidentifier() for part in [*module.split("."), *function.split(".")]):
        raise UserBenchmarkError(f"benchmark {spec!r} is neither a built-in name nor package.module:function")
    return module, function


def _import(spec: str, module: str):
    """The module, searched on sys.path and, as ``python -m`` does, in the current folder."""
    cwd = os.getcwd()
    added = "" not in sys.path and cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and (module == error.name or module.startswith(error.name + ".")):
            raise UserBenchmarkError(f"benchmark {spec!r}: no module named {error.name!r} (searched the current "
                                     "folder and sys.path: add its folder to PYTHONPATH)") from None
        raise UserBenchmarkError(f"benchmark {spec!r}: importing {module} failed: {error}") from None
    except Exception as error:  # noqa: BLE001 - any error of the user's module is theirs to see, in one line
        raise UserBenchmarkError(f"benchmark {spec!r}: importing {module} failed: "
                                 f"{type(error).__name__}: {error}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _check(spec: str, function: str, benchmark: Any) -> None:
    """UserBenchmarkError unless ``benchmark`` is an Avalanche benchmark of image tensors with train/test streams."""
    if not isinstance(benchmark, CLScenario):
        got = "None" if benchmark is None else f"a value of type {type(benchmark).__qualname__}"
        raise UserBenchmarkError(f"benchmark {spec!r}: {function}() returned {got}, not an Avalanche benchmark "
                                 "(e.g. nc_benchmark(...) or benchmark_from_datasets(train=..., test=...))")
    missing = [name for name in ("train_stream", "test_stream") if not hasattr(benchmark, name)]
    if missing:
        raise UserBenchmarkError(f"benchmark {spec!r}: the benchmark has no {' or '.join(missing)}; name its "
                                 "streams train and test")
    if len(benchmark.train_stream) == 0:
        raise UserBenchmarkError(f"benchmark {spec!r}: the train stream has no experience")
    x = benchmark.train_stream[0].dataset[0][0]
    if not (torch.is_tensor(x) and x.dim() == 3):
        shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise UserBenchmarkError(f"benchmark {spec!r}: inputs must be image tensors (channels, height, width), "
                                 f"the first training input is {shape}")


def load_user_benchmark(spec: str, **kwargs: Any):
    """Import ``package.module``, call its ``function(**kwargs)`` and check that it returned a benchmark."""
    module_name, function = parse_spec(spec)
    target = _import(spec, module_name)
    for part in function.split("."):
        if not hasattr(target, part):
            raise UserBenchmarkError(f"benchmark {spec!r}: module {module_name} has no attribute {function!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UserBenchmarkError(f"benchmark {spec!r}: {function} is not a function (type {type(target).__name__})")
    try:
        benchmark = target(**kwargs)
    except Exception as error:  # noqa: BLE001 - reported in one line, naming the call
        arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise UserBenchmarkError(f"benchmark {spec!r}: {function}({arguments}) raised "
                                 f"{type(error).__name__}: {error}") from error
    _check(spec, function, benchmark)
    return benchmark


__all__ = ["UserBenchmarkError", "is_user_benchmark", "load_user_benchmark", "parse_spec"]
