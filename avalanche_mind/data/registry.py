"""Benchmarks by name: the one registry the command line and the comparison runner build from.

The real data sets and the glyph benchmarks are :data:`avalanche_mind.data.real.BENCHMARKS`
(each takes ``data_root`` first); the toy streams are generated in memory, for smoke
runs and tests, and take no data root; ``package.module:function`` is a user's own
(:mod:`avalanche_mind.data.user`). The built-in names are written once, torch-free, in
:data:`avalanche_mind.settings.BENCHMARK_NAMES`, for the help texts.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from avalanche_mind.data import real
from avalanche_mind.data.toy import toy_class_incremental, toy_domain_incremental
from avalanche_mind.data.user import is_user_benchmark, load_user_benchmark, parse_spec
from avalanche_mind.settings import BENCHMARK_NAMES, check_names

LOCAL_BENCHMARKS: Dict[str, Callable[..., Any]] = {
    "toy": toy_class_incremental,
    "toy-domain": toy_domain_incremental,
}
"""Generated in memory by :mod:`avalanche_mind.data.toy`; no files, no data root."""

check_names("data.registry", [*sorted(real.BENCHMARKS), *LOCAL_BENCHMARKS], BENCHMARK_NAMES)


def benchmark_names() -> List[str]:
    """Every built-in name :func:`load_benchmark` builds: the data sets, then the toy streams."""
    return list(BENCHMARK_NAMES)


def check_benchmark_name(name: str) -> None:
    """ValueError, before anything is loaded, for a name that is neither built in nor ``package.module:function``."""
    if is_user_benchmark(name):
        parse_spec(name)
    elif name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown --benchmark {name!r}; use one of {', '.join(BENCHMARK_NAMES)}, "
                         "or package.module:function for your own")


def load_benchmark(name: str, data_root: Optional[real.PathLike] = None, **kwargs: Any):
    """Build the benchmark registered as ``name``, or call the user's ``package.module:function(**kwargs)``.

    ValueError for an unknown name (:class:`~avalanche_mind.data.user.UserBenchmarkError` for a user's
    benchmark that cannot be imported, called or used); :class:`~avalanche_mind.data.real.DatasetNotAvailableError`
    (a FileNotFoundError) within seconds when a data set's files are missing offline.
    """
    if is_user_benchmark(name):
        return load_user_benchmark(name, **kwargs)  # the user's function finds its own data
    if name in LOCAL_BENCHMARKS:
        return LOCAL_BENCHMARKS[name](**kwargs)
    return real.load_benchmark(name, data_root, **kwargs)
