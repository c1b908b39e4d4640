"""Glyph styles: how glyphs are drawn (fonts, pose, ground, colours, noise, blur).

A style is part of the render seed and of the cache key; the domains of the
domain-incremental benchmarks differ here.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

from avalanche_mind.data.glyph_fonts import FontFace, available_faces, has_glyph


@dataclasses.dataclass(frozen=True)
class GlyphStyle:
    """How glyphs are drawn; domains of the domain-incremental benchmark differ here."""

    name: str
    families: tuple[str, ...] = ("sans", "serif", "mono")
    bold: Optional[bool] = None  # None: both weights
    italic: Optional[bool] = None  # None: upright and slanted
    max_rotation: float = 20.0  # degrees, uniform in [-max, max]
    scale: tuple[float, float] = (0.55, 0.9)  # longest side of the glyph / image side
    background: str = "solid"  # "solid", "gradient", "stripes" or "texture"
    colours: str = "any"  # "any", "dark_on_light", "light_on_dark", "grey",
    # "grey_dark_on_light" or "grey_light_on_dark"
    min_contrast: float = 0.4  # luma gap between glyph and every background pixel
    noise_std: float = 0.0  # additive Gaussian pixel noise, in [0, 1] units
    blur: float = 0.0  # Gaussian blur radius of the glyph edge, in output pixels
    rotation: float = 0.0  # fixed rotation (degrees, anticlockwise) added to every pose
    draws: Optional[str] = None
    """Name of the style whose per-sample random draws (font, pose, colours, noise)
    this one reuses; None: its own. Styles that differ only in ``rotation`` and share
    ``draws`` show the same glyph samples, turned (the RotatedMNIST design)."""

    def faces_for(self, char: str) -> list[FontFace]:
        """Fonts of this style that draw ``char``."""
        return [
            f
            for f in available_faces()
            if f.family in self.families
            and (self.bold is None or f.bold == self.bold)
            and (self.italic is None or f.italic == self.italic)
            and has_glyph(f, char)
        ]


STYLES: dict[str, GlyphStyle] = {
    s.name: s
    for s in (
        # Class-incremental benchmark: every font, plain backgrounds.
        GlyphStyle("default"),
        # Domains: font group, background, pose and colour scheme all change.
        GlyphStyle("sans-flat", families=("sans",), italic=False, max_rotation=10.0),
        GlyphStyle(
            "serif-gradient", families=("serif",), italic=False, background="gradient"
        ),
        GlyphStyle(
            "mono-texture",
            families=("mono",),
            max_rotation=15.0,
            background="texture",
            noise_std=0.06,
        ),
        GlyphStyle(
            "italic-rotated", italic=True, max_rotation=50.0, colours="light_on_dark"
        ),
        GlyphStyle(
            "bold-stripes",
            bold=True,
            max_rotation=25.0,
            scale=(0.45, 0.75),
            background="stripes",
        ),
        GlyphStyle(
            "small-blurred",
            scale=(0.4, 0.65),
            background="gradient",
            colours="grey",
            blur=0.7,
            min_contrast=0.5,
        ),
        # Base of the permuted and rotated benchmarks: every font, light grey glyph on
        # a dark solid ground (like MNIST), little pose jitter, so that the domain's
        # permutation or rotation is the only thing that changes.
        GlyphStyle(
            "plain",
            max_rotation=10.0,
            scale=(0.6, 0.9),
            colours="grey_light_on_dark",
            min_contrast=0.5,
        ),
        # Domains of the style-shift benchmark: the same glyph samples (shared draws).
        # Each domain has one fixed polarity and the polarity alternates, so that
        # what a domain teaches contradicts the one before: with random polarity in
        # each domain (colours "grey"/"any") Naive fine-tuning forgot 9 points only.
        GlyphStyle(
            "shift-clean",
            max_rotation=10.0,
            scale=(0.6, 0.9),
            colours="grey_dark_on_light",
            min_contrast=0.5,
            draws="shift",
        ),
        GlyphStyle(
            "shift-noise",
            max_rotation=10.0,
            scale=(0.6, 0.9),
            colours="grey_dark_on_light",
            min_contrast=0.5,
            noise_std=0.3,
            draws="shift",
        ),
        GlyphStyle(
            "shift-blur",
            max_rotation=10.0,
            scale=(0.6, 0.9),
            colours="grey_light_on_dark",
            min_contrast=0.5,
            blur=1.5,
            draws="shift",
        ),
        GlyphStyle(
            "shift-colour",
            max_rotation=10.0,
            scale=(0.6, 0.9),
            background="texture",
            colours="dark_on_light",
            min_contrast=0.4,
            draws="shift",
        ),
    )
}

#: Domain order of :func:`glyph_domain_incremental`.
DOMAIN_STYLES: tuple[str, ...] = (
    "sans-flat",
    "serif-gradient",
    "mono-texture",
    "italic-rotated",
    "bold-stripes",
    "small-blurred",
)


def resolve_style(style: Union[str, GlyphStyle]) -> GlyphStyle:
    """The style itself, or the registered style of that name."""
    if isinstance(style, GlyphStyle):
        return style
    if style not in STYLES:
        raise ValueError(
            f"Unknown glyph style {style!r}; use one of {sorted(STYLES)} "
            "or pass a GlyphStyle."
        )
    return STYLES[style]

