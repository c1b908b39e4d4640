"""Glyph domains: a rendered style seen through a fixed pixel map (permutation,
inversion, channel order), and the domain lists of the permuted, rotated and
style-shift benchmarks.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Union

import numpy as np

from avalanche_mind.data.checks import check_int
from avalanche_mind.data.glyph_styles import GlyphStyle, resolve_style


@dataclasses.dataclass(frozen=True)
class GlyphDomain:
    """One domain of a domain-incremental glyph benchmark: a style, then a fixed pixel map.

    The style is rendered (and cached) as usual; the map is applied to the rendered
    uint8 images each time the benchmark is built (milliseconds), in this order:
    pixel permutation, contrast inversion, channel reordering.
    """

    name: str
    style: Union[str, GlyphStyle]
    permutation: Optional[int] = None
    """Seed of a fixed permutation of the H x W pixel positions (the three channels of
    a pixel move together, as in PermutedMNIST); None: pixels stay in place."""
    invert: bool = False  # 255 - x: light glyphs on dark grounds and vice versa
    channels: tuple[int, int, int] = (0, 1, 2)  # output channel c is input channel channels[c]

    def pixel_permutation(self, image_size: int) -> Optional[np.ndarray]:
        """Flat index of the source pixel of each output pixel (None: the identity)."""
        if self.permutation is None:
            return None
        return np.random.default_rng(self.permutation).permutation(image_size * image_size)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The domain's view of rendered images ``(N, H, W, 3)`` uint8 (a new array)."""
        n, h, w, c = images.shape
        out = images
        if self.permutation is not None:
            if h != w:
                raise ValueError(f"pixel permutations need square images, got {h}x{w}")
            out = out.reshape(n, h * w, c)[:, self.pixel_permutation(h)].reshape(n, h, w, c)
        if self.invert:
            out = 255 - out
        if tuple(self.channels) != (0, 1, 2):
            out = out[..., list(self.channels)]
        return out.copy() if out is images else np.ascontiguousarray(out, dtype=np.uint8)


#: Most domains of :func:`glyph_permuted` and :func:`glyph_rotated`.
MAX_GENERATED_DOMAINS = 20


def permuted_domains(n_domains: int, seed: int = 0) -> list[GlyphDomain]:
    """Domains of :func:`glyph_permuted`: domain 0 unpermuted, domain d >= 1 its own permutation.

    The permutations are drawn from ``(seed, d)``, so they change with the benchmark
    seed and domain ``d`` is the same whatever ``n_domains``.
    """
    check_int("n_domains", n_domains, 1, MAX_GENERATED_DOMAINS)
    check_int("seed", seed, 0)
    return [GlyphDomain("identity", "plain")] + [
        GlyphDomain(f"permutation-{d}", "plain", permutation=_PERMUTATION_SALT + 1000 * seed + d)
        for d in range(1, n_domains)
    ]


_PERMUTATION_SALT = 0x5EED0000  # keeps permutation seeds apart from the render seeds


def rotation_angles(n_domains: int) -> tuple[float, ...]:
    """Default angles of :func:`glyph_rotated`: 0 to 180 degrees in equal steps (5: 45 apart)."""
    check_int("n_domains", n_domains, 1, MAX_GENERATED_DOMAINS)
    step = 180.0 / max(n_domains - 1, 1)
    return tuple(round(d * step, 6) for d in range(n_domains))


def rotated_domains(angles: Sequence[float], base: Union[str, GlyphStyle] = "plain") -> list[GlyphDomain]:
    """One domain per angle: ``base`` with every glyph turned by that angle, same samples."""
    base = resolve_style(base)
    return [
        GlyphDomain(
            f"rotated-{a:g}",
            dataclasses.replace(
                base, name=f"{base.name}-rot{a:g}", rotation=float(a), draws=base.draws or base.name
            ),
        )
        for a in angles
    ]


#: Domains of :func:`glyph_shift`, in order: the same glyph samples each time,
#: dark and light glyphs in turn.
SHIFT_DOMAINS: tuple[GlyphDomain, ...] = (
    GlyphDomain("clean", "shift-clean"),  # dark grey glyph on a light solid ground
    GlyphDomain("inverted", "shift-clean", invert=True),  # the same images, negated: light on dark
    GlyphDomain("noise", "shift-noise"),  # dark on light under Gaussian noise (std 0.3 per channel)
    GlyphDomain("blur", "shift-blur"),  # light on dark, edges blurred (1.5 px radius)
    # Dark coloured glyph on a light coloured texture, channels reordered (RGB -> BRG).
    GlyphDomain("colour-swap", "shift-colour", channels=(2, 0, 1)),
)

