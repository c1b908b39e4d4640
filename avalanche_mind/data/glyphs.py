"""Synbols-style glyph benchmarks, rendered offline from matplotlib's bundled fonts.

Why this exists: the MIND paper evaluates on Synbols, which needs a download and
its own rendering toolchain. These glyphs are a stand-in that needs neither: every
image is drawn with PIL from the DejaVu, STIX and Computer Modern fonts shipped in
``matplotlib/mpl-data/fonts/ttf``, so tests and CPU experiments run anywhere.

The modules underneath: ``glyph_fonts`` (classes and fonts), ``glyph_styles``,
``glyph_domains`` (pixel maps and the domain lists), ``glyph_render`` and
``glyph_cache``. This one builds the Avalanche benchmarks; it re-exports their
public names, so ``avalanche_mind.data.glyphs`` stays the one import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from avalanche_mind.data.checks import check_int
from avalanche_mind.data.glyph_cache import GLYPH_VERSION, cache_path, default_root, load_glyph_arrays
from avalanche_mind.data.glyph_domains import (
    MAX_GENERATED_DOMAINS,
    SHIFT_DOMAINS,
    GlyphDomain,
    permuted_domains,
    rotated_domains,
    rotation_angles,
)
from avalanche_mind.data.glyph_fonts import CHARACTERS, FONT_FACES, FontFace, has_glyph
from avalanche_mind.data.glyph_render import render_glyphs
from avalanche_mind.data.glyph_styles import DOMAIN_STYLES, STYLES, GlyphStyle, resolve_style

__all__ = [
    "CHARACTERS",
    "DOMAIN_STYLES",
    "FONT_FACES",
    "GLYPH_VERSION",
    "MAX_GENERATED_DOMAINS",
    "SHIFT_DOMAINS",
    "STYLES",
    "FontFace",
    "GlyphDataset",
    "GlyphDomain",
    "GlyphStyle",
    "cache_path",
    "default_root",
    "glyph_class_incremental",
    "glyph_domain_incremental",
    "glyph_permuted",
    "glyph_rotated",
    "glyph_shift",
    "has_glyph",
    "load_glyph_arrays",
    "permuted_domains",
    "render_glyphs",
    "rotated_domains",
    "rotation_angles",
]


class GlyphDataset(Dataset):
    """Images kept as uint8 (4x less memory than float) and scaled to [0, 1] on access.

    Items are ``(float tensor (3, H, W), int label)``; ``targets`` is an int64
    tensor, which is what Avalanche reads to build its classification datasets.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, characters: Sequence[str]):
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        self.targets = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.characters = tuple(characters)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.targets[index])


def glyph_class_incremental(
    n_experiences: int = 10,
    *,
    n_classes: int = 100,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    root: Union[str, Path, None] = None,
    image_size: int = 32,
    style: Union[str, GlyphStyle] = "default",
    class_ids_from_zero_from_first_exp: bool = False,
    train_transform: Optional[Callable[[Any], Any]] = None,
    eval_transform: Optional[Callable[[Any], Any]] = None,
):
    """Class-incremental glyphs: ``n_classes / n_experiences`` new characters per experience.

    Classes are the first ``n_classes`` entries of :data:`CHARACTERS`; label ``k``
    is ``CHARACTERS[k]`` whatever the seed (unless
    ``class_ids_from_zero_from_first_exp`` renumbers them in class order).
    ``seed`` fixes both the images and the class order. Returns Avalanche's
    ``NCScenario`` (no task labels), with the characters in ``benchmark.characters``.
    """
    check_int("n_experiences", n_experiences, 1)
    check_int("n_classes", n_classes, 1, len(CHARACTERS))
    check_int("train_per_class", train_per_class, 1)
    check_int("test_per_class", test_per_class, 1)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, 8)
    if n_classes % n_experiences:
        divisors = [d for d in range(1, n_classes + 1) if n_classes % d == 0]
        raise ValueError(
            f"n_classes={n_classes} is not divisible by n_experiences={n_experiences}; "
            f"use n_experiences in {divisors} or change n_classes."
        )
    from avalanche.benchmarks import nc_benchmark

    chars = CHARACTERS[:n_classes]
    arrays = load_glyph_arrays(
        chars,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        style=style,
        image_size=image_size,
        root=root,
    )
    order = np.random.default_rng(seed).permutation(n_classes).tolist()
    benchmark = nc_benchmark(
        GlyphDataset(arrays["x_train"], arrays["y_train"], chars),
        GlyphDataset(arrays["x_test"], arrays["y_test"], chars),
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        fixed_class_order=order,
        class_ids_from_zero_from_first_exp=class_ids_from_zero_from_first_exp,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
    benchmark.characters = chars
    return benchmark


def glyph_domain_incremental(
    n_domains: int = 5,
    *,
    n_classes: int = 20,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    root: Union[str, Path, None] = None,
    image_size: int = 32,
    train_transform: Optional[Callable[[Any], Any]] = None,
    eval_transform: Optional[Callable[[Any], Any]] = None,
):
    """Domain-incremental glyphs: the same characters in every experience, drawn in a new style.

    Experience ``d`` uses style ``DOMAIN_STYLES[d]`` (font group, background, pose
    and colours change), so a model fit to one domain transfers imperfectly to the
    next. The default of 20 classes (the first 20 of :data:`CHARACTERS`) x 600
    images x 5 domains costs about as much as the 100-class benchmark. Returns
    Avalanche's ``NCScenario`` built like its ``PermutedMNIST``: no task labels,
    labels ``0..n_classes-1`` in every experience, ``benchmark.n_classes ==
    n_classes``; styles in ``benchmark.domains``.
    """
    check_int("n_domains", n_domains, 1, len(DOMAIN_STYLES))
    domains = [GlyphDomain(name, name) for name in DOMAIN_STYLES[:n_domains]]
    return _domain_benchmark(
        domains,
        n_classes=n_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        root=root,
        image_size=image_size,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )



def glyph_permuted(
    n_domains: int = 5,
    *,
    n_classes: int = 20,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    root: Union[str, Path, None] = None,
    image_size: int = 32,
    train_transform: Optional[Callable[[Any], Any]] = None,
    eval_transform: Optional[Callable[[Any], Any]] = None,
):
    """Permuted glyphs (the PermutedMNIST design): one fixed pixel permutation per domain.

    Every domain holds the same images, rendered once in the ``"plain"`` style
    (light grey glyph on a dark ground, every font); domain 0 leaves them as drawn
    (the identity), domain ``d >= 1`` moves every pixel by its own permutation
    seeded from ``(seed, d)`` (see :func:`permuted_domains`). Arguments and result
    as :func:`glyph_domain_incremental`.
    """
    return _domain_benchmark(
        permuted_domains(n_domains, seed),
        n_classes=n_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        root=root,
        image_size=image_size,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


def glyph_rotated(
    n_domains: int = 5,
    *,
    n_classes: int = 20,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    root: Union[str, Path, None] = None,
    image_size: int = 32,
    angles: Optional[Sequence[float]] = None,
    train_transform: Optional[Callable[[Any], Any]] = None,
    eval_transform: Optional[Callable[[Any], Any]] = None,
):
    """Rotated glyphs (the RotatedMNIST design): one fixed rotation per domain.

    Domain ``d`` draws the same glyph samples as every other domain (same font,
    size, position, colours, +-10 degree jitter) turned by ``angles[d]`` degrees
    anticlockwise (default :func:`rotation_angles`: 0, 45, 90, 135, 180 for 5
    domains). The glyph itself is turned when it is drawn, so the ground is not
    rotated and no corner is cut off. Arguments and result as
    :func:`glyph_domain_incremental`.
    """
    check_int("n_domains", n_domains, 1, MAX_GENERATED_DOMAINS)
    angles = rotation_angles(n_domains) if angles is None else tuple(float(a) for a in angles)
    if len(angles) != n_domains:
        raise ValueError(f"angles has {len(angles)} entries; n_domains is {n_domains}")
    return _domain_benchmark(
        rotated_domains(angles),
        n_classes=n_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        root=root,
        image_size=image_size,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


def glyph_shift(
    n_domains: int = 5,
    *,
    n_classes: int = 20,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    root: Union[str, Path, None] = None,
    image_size: int = 32,
    train_transform: Optional[Callable[[Any], Any]] = None,
    eval_transform: Optional[Callable[[Any], Any]] = None,
):
    """Glyphs under a hard style shift per domain (:data:`SHIFT_DOMAINS`).

    The same glyph samples in every domain: clean dark-on-light, the same images
    contrast-inverted, dark-on-light under heavy noise, light-on-dark blurred, and
    dark coloured glyphs on a light colour texture with the channels reordered.
    Each domain has one polarity and consecutive domains alternate it, so that
    fine-tuning on one undoes the previous (README: 33 points of forgetting for
    Naive on the CPU preset, against 9 with random polarity in each domain).
    Arguments and result as :func:`glyph_domain_incremental`.
    """
    check_int("n_domains", n_domains, 1, len(SHIFT_DOMAINS))
    return _domain_benchmark(
        SHIFT_DOMAINS[:n_domains],
        n_classes=n_classes,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        root=root,
        image_size=image_size,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )


def _domain_benchmark(
    domains: Sequence[GlyphDomain],
    *,
    n_classes: int,
    train_per_class: int,
    test_per_class: int,
    seed: int,
    root: Union[str, Path, None],
    image_size: int,
    train_transform: Optional[Callable[[Any], Any]],
    eval_transform: Optional[Callable[[Any], Any]],
):
    """One experience per domain, every class in each; built like Avalanche's PermutedMNIST."""
    check_int("n_classes", n_classes, 1, len(CHARACTERS))
    check_int("train_per_class", train_per_class, 1)
    check_int("test_per_class", test_per_class, 1)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, 8)
    from avalanche.benchmarks import nc_benchmark

    chars = CHARACTERS[:n_classes]
    train_sets, test_sets = [], []
    rendered: dict[GlyphStyle, dict[str, np.ndarray]] = {}  # domains may share a style
    for domain in domains:
        style = resolve_style(domain.style)
        if style not in rendered:
            rendered[style] = load_glyph_arrays(
                chars,
                train_per_class=train_per_class,
                test_per_class=test_per_class,
                seed=seed,
                style=style,
                image_size=image_size,
                root=root,
            )
        arrays = rendered[style]
        train_sets.append(GlyphDataset(domain.apply(arrays["x_train"]), arrays["y_train"], chars))
        test_sets.append(GlyphDataset(domain.apply(arrays["x_test"]), arrays["y_test"], chars))
    benchmark = nc_benchmark(
        train_sets,
        test_sets,
        n_experiences=len(domains),
        task_labels=False,
        shuffle=False,
        one_dataset_per_exp=True,
        class_ids_from_zero_in_each_exp=True,
        train_transform=train_transform,
        eval_transform=eval_transform,
    )
    # Avalanche counts each domain's copy of the classes as new classes (its
    # PermutedMNIST reports 10 x n_experiences); a model needs n_classes outputs.
    benchmark.n_classes = n_classes
    benchmark.characters = chars
    benchmark.domains = tuple(d.name for d in domains)
    return benchmark
