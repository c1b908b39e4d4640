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
# MIND's defaults instead: self_distillation=True, new_weights="zero", negatives="features",
# task_inference="likelihood_ratio" (chosen on the validation split; see the README).
"""``MIND(model=..., n_experiences=..., **PAPER_SETTINGS)`` is the paper's method exactly, as the
authors' code runs it. MIND's defaults depart from it for task identification; the README's
"Defaults and the paper" section says how and by how much each step gains."""
