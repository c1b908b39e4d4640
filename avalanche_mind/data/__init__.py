"""Benchmarks for MIND: offline generated glyphs and the paper's real datasets.

``glyphs`` renders Synbols-style benchmarks from matplotlib's fonts (no download):
class-incremental, and domain-incremental by style, pixel permutation, rotation or
a hard style shift;
``real`` wraps Avalanche's CIFAR-100, Tiny ImageNet, CORe50 and MNIST benchmarks
and fails within seconds, with instructions, when their files are missing offline;
``registry`` builds any of them, or a generated ``toy`` stream, by name, and ``user``
a user's own ``package.module:function``.
"""

from avalanche_mind.data.glyphs import (
    CHARACTERS,
    DOMAIN_STYLES,
    SHIFT_DOMAINS,
    STYLES,
    GlyphDataset,
    GlyphDomain,
    GlyphStyle,
    glyph_class_incremental,
    glyph_domain_incremental,
    glyph_permuted,
    glyph_rotated,
    glyph_shift,
    load_glyph_arrays,
    render_glyphs,
)
from avalanche_mind.data.real import (
    BENCHMARKS,
    DatasetNotAvailableError,
    core50_domain,
    permuted_mnist,
    rotated_mnist,
    split_cifar100,
    split_tiny_imagenet,
)
from avalanche_mind.data.registry import benchmark_names, load_benchmark
from avalanche_mind.data.user import UserBenchmarkError

__all__ = [
    "BENCHMARKS",
    "CHARACTERS",
    "DOMAIN_STYLES",
    "SHIFT_DOMAINS",
    "STYLES",
    "DatasetNotAvailableError",
    "UserBenchmarkError",
    "GlyphDataset",
    "GlyphDomain",
    "GlyphStyle",
    "benchmark_names",
    "core50_domain",
    "glyph_class_incremental",
    "glyph_domain_incremental",
    "glyph_permuted",
    "glyph_rotated",
    "glyph_shift",
    "load_benchmark",
    "load_glyph_arrays",
    "permuted_mnist",
    "render_glyphs",
    "rotated_mnist",
    "split_cifar100",
    "split_tiny_imagenet",
]
