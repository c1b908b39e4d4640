"""The on-disk glyph cache: rendered arrays as compressed uint8 ``.npz`` files keyed by
every generation parameter, written atomically so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence, Union

import matplotlib
import numpy as np
import PIL

from avalanche_mind.data.glyph_fonts import available_faces
from avalanche_mind.data.glyph_render import render_glyphs
from avalanche_mind.data.glyph_styles import GlyphStyle, resolve_style

#: Bump when rendering changes, so stale caches are never reused.
GLYPH_VERSION = 3


def default_root() -> Path:
    """Cache folder: ``$AVALANCHE_MIND_DATA/glyphs`` or ``~/.cache/avalanche_mind/glyphs``."""
    env = os.environ.get("AVALANCHE_MIND_DATA")
    if env:
        return Path(env).expanduser() / "glyphs"
    return Path.home() / ".cache" / "avalanche_mind" / "glyphs"


def cache_path(
    chars: Sequence[str],
    *,
    train_per_class: int,
    test_per_class: int,
    seed: int,
    style: Union[str, GlyphStyle],
    image_size: int,
    root: Union[str, Path, None] = None,
) -> Path:
    """The cache file for these parameters; every parameter is part of its name."""
    style = resolve_style(style)
    key = _cache_key(chars, train_per_class, test_per_class, seed, style, image_size)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
    folder = Path(root).expanduser() if root is not None else default_root()
    return folder / f"glyphs-v{GLYPH_VERSION}-{style.name}-{len(chars)}c-{digest}.npz"


def _cache_key(chars, train_per_class, test_per_class, seed, style, image_size) -> str:
    # Font files and library versions are in the key: they change the pixels.
    return json.dumps(
        {
            "version": GLYPH_VERSION,
            "chars": "".join(chars),
            "train_per_class": int(train_per_class),
            "test_per_class": int(test_per_class),
            "seed": int(seed),
            "style": _style_key(style),
            "image_size": int(image_size),
            "fonts": [f.file for f in available_faces()],
            "matplotlib": matplotlib.__version__,
            "pillow": PIL.__version__,
        },
        sort_keys=True,
    )


#: GlyphStyle fields added after caches existed, with the value that draws as before.
_LATER_STYLE_FIELDS = {"rotation": 0.0, "draws": None}


def _style_key(style: GlyphStyle) -> dict:
    """The style's fields; later ones are left out at their neutral value, so older caches stay valid."""
    fields = dataclasses.asdict(style)
    for name, neutral in _LATER_STYLE_FIELDS.items():
        if fields[name] == neutral:
            del fields[name]
    return fields


def _check_arrays(arrays: dict, n_classes: int, train_per_class: int, test_per_class: int, image_size: int) -> None:
    """ValueError unless the cached arrays have the lengths, labels and image size their key promises."""
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y) or len(y) != n_classes * per_class:
            raise ValueError(f"{split} arrays hold {len(x)} images and {len(y)} labels, not "
                             f"{n_classes * per_class}")
        if x.ndim not in (3, 4) or x.shape[1:3] != (image_size, image_size):
            raise ValueError(f"{split} images have shape {x.shape[1:]}, not {image_size}x{image_size}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(f"{split} labels outside 0..{n_classes - 1}")


def load_glyph_arrays(
    chars: Sequence[str],
    *,
    train_per_class: int,
    test_per_class: int,
    seed: int = 0,
    style: Union[str, GlyphStyle] = "default",
    image_size: int = 32,
    root: Union[str, Path, None] = None,
) -> dict[str, np.ndarray]:
    """Train/test arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``), from cache if present.

    Rendering is written once, atomically (temp file then ``os.replace``), so a
    crash or a concurrent run never leaves a half-written cache behind.
    """
    style = resolve_style(style)
    path = cache_path(
        chars,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
        style=style,
        image_size=image_size,
        root=root,
    )
    key = _cache_key(chars, train_per_class, test_per_class, seed, style, image_size)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["key"]) == key:
                    arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
                    _check_arrays(arrays, len(chars), train_per_class, test_per_class, image_size)
                    return arrays
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
            # Unreadable (empty, truncated), damaged or foreign file: render again and overwrite it.
            warnings.warn(f"glyph cache {path} is unreadable ({type(error).__name__}: {error}); rendering it "
                          "again and replacing the file", stacklevel=2)

    x_train, y_train = render_glyphs(
        chars, train_per_class, seed, style, image_size=image_size, split="train"
    )
    x_test, y_test = render_glyphs(
        chars, test_per_class, seed, style, image_size=image_size, split="test"
    )
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError as error:
        # The rendering is done and correct: use it, and say why it will be redone next time.
        warnings.warn(f"cannot write the glyph cache in {path.parent} ({error.strerror or error}): the glyphs "
                      "are used but will be rendered again next run; set AVALANCHE_MIND_DATA (or "
                      "--data-root) to a writable folder", stacklevel=2)
        return arrays
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, key=np.array(key), **arrays)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it the cache
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"cannot write the glyph cache {path} ({error.strerror or error}): the glyphs are used "
                      "but will be rendered again next run", stacklevel=2)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arrays
