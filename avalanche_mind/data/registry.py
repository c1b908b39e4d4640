"""Benchmarks by name: the one registry the command line and the comparison runner build from.

The real data sets and the glyph benchmarks are :data:`avalanche_mind.data.real.BENCHMARKS`
(each takes ``data_root`` first); the toy streams are generated in memory, for smoke
runs and tests, and take no data root.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from avalanche_mind.data import real
from avalanche_mind.data.toy import toy_class_incremental, toy_domain_incremental

LOCAL_BENCHMARKS: Dict[str, Callable[..., Any]] = {
    "toy": toy_class_incremental,
    "toy-domain": toy_domain_incremental,
}
"""Generated in memory by :mod:`avalanche_mind.data.toy`; no files, no data root."""


def benchmark_names() -> List[str]:
    """Every name :func:`load_benchmark` builds: the data sets, then the toy streams."""
    return sorted(real.BENCHMARKS) + list(LOCAL_BENCHMARKS)


def load_benchmark(name: str, data_root: Optional[real.PathLike] = None, **kwargs: Any):
    """Build the benchmark registered as ``name``.

    ValueError for an unknown name; :class:`~avalanche_mind.data.real.DatasetNotAvailableError`
    (a FileNotFoundError) within seconds when a data set's files are missing offline.
    """
    if name in LOCAL_BENCHMARKS:
        return LOCAL_BENCHMARKS[name](**kwargs)
    return real.load_benchmark(name, data_root, **kwargs)
