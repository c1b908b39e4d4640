"""Argument checks of the glyph modules: each error names the argument and the range that fits."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def check_int(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> None:
    """Raise a ValueError that says which argument is wrong and what range fits."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
