"""The paper's method as keyword arguments, and the names of every choice the command line offers.

Kept free of torch and Avalanche imports, so the command line and its help can read it cheaply.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Sequence

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

# ------------------------------------------------------------------ names
# Every list of choices the command line shows, written once here so that its help needs neither
# torch nor Avalanche; the modules that implement the names check at import that they implement
# exactly these (check_names), so a help text cannot miss one.
TASK_INFERENCE_RULES = (
    "max_confidence", "entropy", "max_logit", "energy", "zscore", "likelihood_ratio", "shared_foreign",
)
"""How a test input's task is chosen without its label (implemented in :mod:`avalanche_mind.task_id.rules`)."""
DISTILL_LOSS_NAMES = ("js", "symmetric_kl", "kl", "cosine", "l2")
"""The distillation divergences (implemented by :data:`avalanche_mind.core.losses.DISTILL_LOSSES`)."""
MODEL_NAMES = ("auto", "gresnet32", "gresnet32_64", "small_cnn", "resnet", "vit")
"""What ``--model`` accepts (:mod:`avalanche_mind.models.registry`); ``auto`` picks the ResNet-32 for the input size."""
BENCHMARK_NAMES = (
    "cifar100", "core50", "glyphs", "glyphs-domain", "glyphs-permuted", "glyphs-rotated", "glyphs-shift",
    "permuted-mnist", "rotated-mnist", "tinyimagenet", "toy", "toy-domain",
)
"""The built-in benchmarks (:mod:`avalanche_mind.data.registry`); ``package.module:function`` names a user's own."""
WANDB_MODES = ("online", "offline", "disabled")
"""``--wandb-mode``'s choices (W&B's own modes)."""
DEFAULT_TIMEOUT_S = 300.0
"""Under torchrun, how long a rank waits for the others before failing (``--dist-timeout``'s default;
:mod:`avalanche_mind.core.distributed`'s)."""


def check_rule(rule: str) -> None:
    """ValueError for a task-inference rule that is not one of :data:`TASK_INFERENCE_RULES`."""
    if rule not in TASK_INFERENCE_RULES:
        raise ValueError(f"unknown task_inference {rule!r}; use one of {list(TASK_INFERENCE_RULES)}")


def check_names(what: str, implemented: Iterable[str], declared: Sequence[str]) -> None:
    """RuntimeError at import when a module implements other names than the ones declared here (a bug, not a
    user error): the help texts list ``declared``."""
    implemented = tuple(implemented)
    if implemented != tuple(declared):
        raise RuntimeError(f"{what} implements {list(implemented)} but avalanche_mind.settings declares "
                           f"{list(declared)}: keep the two equal, in the same order")
