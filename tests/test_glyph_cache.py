"""The glyph cache never stops a run: a damaged cache is rendered again, an unwritable one is skipped, each with a
warning that names it."""
from __future__ import annotations

import numpy as np
import pytest

from avalanche_mind.data import glyphs


def test_an_empty_cache_file_is_rendered_again_with_a_warning_naming_it(tmp_path):
    chars = list(glyphs.CHARACTERS[:2])
    kwargs = dict(train_per_class=2, test_per_class=1, seed=0, root=tmp_path)
    first = glyphs.load_glyph_arrays(chars, **kwargs)
    path = glyphs.cache_path(chars, train_per_class=2, test_per_class=1, seed=0, style="default",
                             image_size=32, root=tmp_path)
    path.write_bytes(b"")  # a zero-length cache, as a full disk or a kill before fsync leaves
    with pytest.warns(UserWarning, match=f"glyph cache {path} is unreadable"):
        again = glyphs.load_glyph_arrays(chars, **kwargs)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert path.stat().st_size > 0  # replaced: the next run reads it


def test_an_unwritable_cache_folder_still_gives_the_glyphs_with_a_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    chars = list(glyphs.CHARACTERS[:2])
    with pytest.warns(UserWarning, match="cannot write the glyph cache.*AVALANCHE_MIND_DATA"):
        arrays = glyphs.load_glyph_arrays(chars, train_per_class=2, test_per_class=1, root=blocker / "sub")
    assert len(arrays["y_train"]) == 4
