"""The paper's method as keyword arguments, beside the choices MIND's own defaults make.

Kept free of torch and Avalanche imports, so the command line can read it cheaply.
"""
from __future__ import annotations

from typing import Any, Dict

NEW_WEIGHTS = ("zero", "random")
REJECTIONS = (None, "rotation")
NEGATIVE_SOURCES = (None, "transforms", "features", "inversion")

PAPER_SETTINGS: Dict[str, Any] = {
    "self_distillation": False,
    "new_weights": "zero",
    "rejection": None,
    "negatives": None,
    "task_inference": "max_confidence",
    "distill_loss": "symmetric_kl",  # the authors' "JS": the mean of both KLs (see losses.symmetric_kl)
}
"""``MIND(model=..., n_experiences=..., **PAPER_SETTINGS)`` is the paper's method exactly, as the
authors' code runs it. MIND's defaults (``avalanche_mind.core.config.MINDConfig``, the only place
they are written) depart from it for task identification; the README's "Defaults and the paper"
section says how and by how much each step gains. Where a preset and explicit keywords meet it,
``avalanche_mind.core.config.resolve_settings`` orders them: preset < PAPER_SETTINGS < keywords."""
