"""Rendering glyph images with PIL: pose, colours, ground and noise per sample.

Every sample is drawn from its own random generator, seeded with
``(seed, style, split, character, index)``, so an image never depends on which
other classes or how many samples were asked for, nor on the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
import zlib
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageFilter

from avalanche_mind.data.checks import check_int
from avalanche_mind.data.glyph_fonts import FontFace, master_mask
from avalanche_mind.data.glyph_styles import GlyphStyle, resolve_style

_LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 luma of gamma-encoded RGB
_SPLITS = {"train": 0, "test": 1}


def _colours(rng: np.random.Generator, style: GlyphStyle) -> np.ndarray:
    """Rows: glyph colour and two background colours, lumas at least min_contrast apart.

    Lumas are drawn first (so contrast holds by construction, no rejection loop),
    then each colour gets a random hue mixed toward white or black to hit its luma.
    """
    u = rng.random(13)
    gap = style.min_contrast
    if style.colours.endswith("on_light") or style.colours.endswith("on_dark"):
        dark_glyph = style.colours.endswith("dark_on_light")
    else:
        dark_glyph = bool(u[0] < 0.5)
    if dark_glyph:
        fg = (1.0 - gap) * u[1]
        low, high = fg + gap, 1.0
    else:
        fg = gap + (1.0 - gap) * u[1]
        low, high = 0.0, fg - gap
    lumas = np.array([fg, low + (high - low) * u[2], low + (high - low) * u[3]])
    if style.colours.startswith("grey"):
        return np.repeat(lumas[:, None], 3, axis=1).astype(np.float32)
    hues = u[4:13].reshape(3, 3)
    current = hues @ _LUMA
    lift = (lumas - current) / np.maximum(1.0 - current, 1e-6)
    toward_white = hues + lift[:, None] * (1.0 - hues)
    toward_black = hues * (lumas / np.maximum(current, 1e-6))[:, None]
    return np.where((current < lumas)[:, None], toward_white, toward_black).astype(np.float32)


def _background_weight(
    rng: np.random.Generator, kind: str, size: int
) -> Optional[np.ndarray]:
    """Per-pixel mix in [0, 1] between the two background colours (None: solid)."""
    if kind == "solid":
        return None
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    along = xs * np.cos(theta) + ys * np.sin(theta)
    if kind == "gradient":
        return (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    if kind == "stripes":
        freq = rng.uniform(2.0, 5.0)
        return 0.5 + 0.5 * np.sin(2.0 * np.pi * freq * along + rng.uniform(0, 2 * np.pi))
    if kind == "texture":
        cells = int(rng.integers(3, 7))
        coarse = Image.fromarray(rng.random((cells, cells)).astype(np.float32))  # mode "F"
        field = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float64)
        return np.clip((field - field.min()) / max(float(np.ptp(field)), 1e-6), 0, 1)
    raise ValueError(f"Unknown background kind {kind!r}")


_SUPERSAMPLE = 2  # glyphs are drawn at 2x and box-filtered down: smooth edges


def _master_size(image_size: int) -> int:
    """Font size of the cached glyph that is posed onto the 2x canvas."""
    return max(64, 2 * image_size)


def _place_glyph(
    char: str, face: FontFace, style: GlyphStyle, rng: np.random.Generator, image_size: int
) -> np.ndarray:
    """Coverage (H, W) float32 in [0, 1] of one randomly posed glyph.

    Rotation, size, aspect and position are one affine map from the cached master
    glyph to a 2x canvas (a single PIL call), which is then averaged down 2x.
    """
    angle = np.deg2rad(style.rotation + rng.uniform(-style.max_rotation, style.max_rotation))
    aspect = float(np.exp(rng.uniform(-0.15, 0.15)))  # mild width jitter
    target = rng.uniform(*style.scale) * image_size * _SUPERSAMPLE  # longest side
    canvas = image_size * _SUPERSAMPLE
    cos, sin = float(np.cos(angle)), float(np.sin(angle))

    # Mip level: the master is halved while shrinking it more than 1.5x, so the
    # bilinear sampling never skips strokes.
    size = _master_size(image_size)
    mask = master_mask(face.file, char, size)
    while True:
        w0, h0 = mask.size
        box_w = (abs(w0 * cos) + abs(h0 * sin)) * aspect  # rotated box, master px
        box_h = abs(w0 * sin) + abs(h0 * cos)
        scale = min(target / max(box_w, box_h), canvas / box_w, canvas / box_h)
        smaller = master_mask(face.file, char, size // 2) if scale < 0.66 and size > 16 else None
        if smaller is None:
            break
        mask, size = smaller, size // 2
    out_w, out_h = box_w * scale, box_h * scale
    cx = rng.uniform(0.0, canvas - out_w) + out_w / 2  # glyph box fully inside
    cy = rng.uniform(0.0, canvas - out_h) + out_h / 2
    # Inverse map (output -> master) of: rotate about the centre, scale, move.
    a, b = cos / (aspect * scale), -sin / scale
    d, e = sin / (aspect * scale), cos / scale
    coeffs = (a, b, w0 / 2 - a * cx - b * cy, d, e, h0 / 2 - d * cx - e * cy)
    drawn = mask.transform((canvas, canvas), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    if style.blur > 0:
        radius = rng.uniform(0.5, 1.0) * style.blur * _SUPERSAMPLE
        drawn = drawn.filter(ImageFilter.GaussianBlur(radius))
    coverage = np.asarray(drawn.reduce(_SUPERSAMPLE), dtype=np.float32)
    # Divide by the peak rather than by 255: thin, small or blurred strokes never
    # cover a whole pixel, and this keeps the style's full colour contrast.
    return coverage / max(float(coverage.max()), 1.0)


def _render_one(
    char: str,
    faces: Sequence[FontFace],
    style: GlyphStyle,
    rng: np.random.Generator,
    image_size: int,
) -> np.ndarray:
    """Draw one glyph image (H, W, 3) uint8; all randomness comes from ``rng``."""
    face = faces[int(rng.integers(len(faces)))]
    alpha = _place_glyph(char, face, style, rng, image_size)[..., None]
    fg, bg1, bg2 = _colours(rng, style)
    weight = _background_weight(rng, style.background, image_size)
    if weight is None:
        background = bg1
    else:
        background = bg1 + (bg2 - bg1) * weight.astype(np.float32)[..., None]
    image = background + (fg - background) * alpha
    if style.noise_std > 0:
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image = image + np.float32(style.noise_std) * noise
    image = image * np.float32(255.0) + np.float32(0.5)
    return np.clip(image, 0.0, 255.0, out=image).astype(np.uint8)


def render_glyphs(
    chars: Sequence[str],
    n_per_class: int,
    seed: int = 0,
    style: Union[str, GlyphStyle] = "default",
    *,
    image_size: int = 32,
    split: str = "train",
    workers: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n_per_class`` images of every character, grouped by class.

    Returns ``(images, labels)``: uint8 ``(N, image_size, image_size, 3)`` and int64
    labels indexing ``chars``. Sample ``i`` of a character depends only on
    ``(seed, style name, split, character, i)``, so asking for more samples or more
    classes never changes the ones already drawn, and "train"/"test" never overlap.
    ``workers`` processes share the classes (default: all cores for large jobs);
    the result is identical for any number of workers.
    """
    style = resolve_style(style)
    check_int("n_per_class", n_per_class, 1)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, 8)
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
        raise ValueError("chars must be distinct single characters")
    for char in chars:
        if not style.faces_for(char):
            raise ValueError(
                f"No font of style {style.name!r} draws {char!r}; "
                "choose characters from CHARACTERS or widen the style's fonts."
            )

    jobs = [(char, n_per_class, seed, style, image_size, split) for char in chars]
    if workers is None:
        big = len(chars) * n_per_class >= 4000
        workers = min(os.cpu_count() or 1, len(chars)) if big else 1
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    if workers > 1 and can_fork and not multiprocessing.current_process().daemon:
        # fork, like PyTorch's DataLoader workers: children reuse the loaded fonts
        # and never re-import the package.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            per_class = pool.map(_render_class, jobs, chunksize=1)
    else:
        per_class = [_render_class(job) for job in jobs]
    images = np.concatenate(per_class, axis=0)
    labels = np.repeat(np.arange(len(chars), dtype=np.int64), n_per_class)
    return images, labels


def _render_class(job: tuple) -> np.ndarray:
    """All samples of one character (a unit of work for the process pool)."""
    char, n, seed, style, image_size, split = job
    faces = style.faces_for(char)
    style_id = zlib.crc32((style.draws or style.name).encode("utf-8"))
    out = np.empty((n, image_size, image_size, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, style_id, _SPLITS[split], ord(char), i])
        out[i] = _render_one(char, faces, style, rng, image_size)
    return out

