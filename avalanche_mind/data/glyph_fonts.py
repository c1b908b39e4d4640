"""The glyph classes and the fonts that draw them: matplotlib's bundled DejaVu, STIX and
Computer Modern files, so rendering needs no download.

A font counts as drawing a character only if its cmap maps it, its encoding puts
that character there, and it leaves visible ink; glyph masks are cached per process.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Optional

import matplotlib
from PIL import Image, ImageDraw, ImageFont

#: The 100 classes. Chosen to be distinct in shape, because every glyph is scaled
#: to a random size (so size cannot tell case apart): near-identical pairs such as
#: O/0, l/I/1, S/s, C/c, Phi/phi, alpha/italic a, gamma/y and Sigma/sum are left out.
CHARACTERS: tuple[str, ...] = tuple(
    "23456789"  # digits without 0 and 1
    "ABCDEFGHJKLMNPQRTUVWXYZ"  # upper case without I, O, S
    "abdefghijmnqrty"  # lower case whose upper case looks different
    "ΓΔΛΞΣΩ"  # Greek capitals unlike any Latin capital
    "βδεζθλμξπσφψω"  # Greek small letters unlike Latin ones
    "+=<>%&@#$?!§¶*~"
    "∞∫√∂∇≈±÷≠∀Æ"
    "€£¥©"
    "♠♣♥♦→"
)
assert len(CHARACTERS) == 100 and len(set(CHARACTERS)) == 100

_FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@dataclasses.dataclass(frozen=True)
class FontFace:
    """One font file and the traits styles select on."""

    file: str
    family: str  # "sans", "serif" or "mono"
    bold: bool = False
    italic: bool = False
    # Computer Modern files use TeX's encoding: only ASCII letters and digits sit
    # at their Unicode code points (e.g. code point '<' draws an inverted '!').
    alnum_only: bool = False


FONT_FACES: tuple[FontFace, ...] = (
    FontFace("DejaVuSans.ttf", "sans"),
    FontFace("DejaVuSans-Bold.ttf", "sans", bold=True),
    FontFace("DejaVuSans-Oblique.ttf", "sans", italic=True),
    FontFace("DejaVuSans-BoldOblique.ttf", "sans", bold=True, italic=True),
    FontFace("DejaVuSansMono.ttf", "mono"),
    FontFace("DejaVuSansMono-Bold.ttf", "mono", bold=True),
    FontFace("DejaVuSansMono-Oblique.ttf", "mono", italic=True),
    FontFace("DejaVuSansMono-BoldOblique.ttf", "mono", bold=True, italic=True),
    FontFace("DejaVuSerif.ttf", "serif"),
    FontFace("DejaVuSerif-Bold.ttf", "serif", bold=True),
    FontFace("DejaVuSerif-Italic.ttf", "serif", italic=True),
    FontFace("DejaVuSerif-BoldItalic.ttf", "serif", bold=True, italic=True),
    FontFace("STIXGeneral.ttf", "serif"),
    FontFace("STIXGeneralBol.ttf", "serif", bold=True),
    FontFace("STIXGeneralItalic.ttf", "serif", italic=True),
    FontFace("STIXGeneralBolIta.ttf", "serif", bold=True, italic=True),
    FontFace("cmr10.ttf", "serif", alnum_only=True),
    FontFace("cmb10.ttf", "serif", bold=True, alnum_only=True),
    FontFace("cmti10.ttf", "serif", italic=True, alnum_only=True),
    FontFace("cmmi10.ttf", "serif", italic=True, alnum_only=True),
    FontFace("cmss10.ttf", "sans", alnum_only=True),
    FontFace("cmtt10.ttf", "mono", alnum_only=True),
)


@functools.lru_cache(maxsize=None)
def available_faces() -> tuple[FontFace, ...]:
    """Faces whose file exists in this matplotlib install."""
    return tuple(f for f in FONT_FACES if (_FONT_DIR / f.file).is_file())


@functools.lru_cache(maxsize=None)
def _codepoints(file: str) -> frozenset[int]:
    """Code points the font's cmap maps to a glyph (read once per font)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(_FONT_DIR / file), lazy=True) as font:
        return frozenset((font.getBestCmap() or {}).keys())


@functools.lru_cache(maxsize=None)
def _font(file: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_DIR / file), size)


@functools.lru_cache(maxsize=None)
def master_mask(file: str, char: str, size: int) -> Optional[Image.Image]:
    """The glyph's coverage mask cropped to its ink, or None if it draws nothing."""
    font = _font(file, size)
    left, top, right, bottom = font.getbbox(char)
    canvas = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(canvas).text((2 - left, 2 - top), char, font=font, fill=255)
    box = canvas.getbbox()
    return None if box is None else canvas.crop(box)


def has_glyph(face: FontFace, char: str) -> bool:
    """True if ``face`` really draws ``char`` (cmap entry, encoding, visible ink)."""
    if face.alnum_only and not (char.isascii() and char.isalnum()):
        return False
    if ord(char) not in _codepoints(face.file):
        return False
    return master_mask(face.file, char, 64) is not None
