"""Benchmarks for MIND: offline generated glyphs and the paper's real datasets.

``glyphs`` renders a Synbols-style benchmark from matplotlib's fonts (no download);
``real`` wraps Avalanche's CIFAR-100, Tiny ImageNet, CORe50 and MNIST benchmarks
and fails within seconds, with instructions, when their files are missing offline.
Avalanche itself is imported only when a benchmark is built.
"""

from avalanche_mind.data.glyphs import (
    CHARACTERS,
    DOMAIN_STYLES,
    STYLES,
    GlyphDataset,
    GlyphStyle,
    glyph_class_incremental,
    glyph_domain_incremental,
    load_glyph_arrays,
    render_glyphs,
)
from avalanche_mind.data.real import (
    BENCHMARKS,
    DatasetNotAvailableError,
    core50_domain,
    load_benchmark,
    permuted_mnist,
    rotated_mnist,
    split_cifar100,
    split_tiny_imagenet,
)

__all__ = [
    "BENCHMARKS",
    "CHARACTERS",
    "DOMAIN_STYLES",
    "STYLES",
    "DatasetNotAvailableError",
    "GlyphDataset",
    "GlyphStyle",
    "core50_domain",
    "glyph_class_incremental",
    "glyph_domain_incremental",
    "load_benchmark",
    "load_glyph_arrays",
    "permuted_mnist",
    "render_glyphs",
    "rotated_mnist",
    "split_cifar100",
    "split_tiny_imagenet",
]
