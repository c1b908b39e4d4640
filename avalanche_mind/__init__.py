"""MIND (Multi-Task Incremental Network Distillation) for Avalanche.

The public names are imported on first use (module ``__getattr__``), not with the package:
``import avalanche_mind.settings`` and the command line's ``--help`` then need neither torch nor
Avalanche (about ten seconds of imports). ``from avalanche_mind import MIND`` works as before.
"""
import importlib
import warnings

# Avalanche imports qpsolvers (for GEM, unused here), which warns at import that no QP solver is
# installed: noise for every user of this package. Whichever module imports Avalanche first, the
# filter is already set, since every submodule's import runs this file first.
warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)

_SOURCES = {
    "PAPER_SETTINGS": "avalanche_mind.settings",
    "FREE": "avalanche_mind.core.layers",
    "GatedConv2d": "avalanche_mind.core.layers",
    "GatedLinear": "avalanche_mind.core.layers",
    "gate_model": "avalanche_mind.core.layers",
    "gated_layers": "avalanche_mind.core.layers",
    "OwnershipMap": "avalanche_mind.core.ownership",
    "MIND": "avalanche_mind.core.strategy",
    "default_mind_evaluator": "avalanche_mind.core.strategy",
    "TAgAccuracy": "avalanche_mind.inference.metrics",
    "TAwAccuracy": "avalanche_mind.inference.metrics",
    "TaskIdAccuracy": "avalanche_mind.inference.metrics",
    "mind_metrics": "avalanche_mind.inference.metrics",
    "gresnet32": "avalanche_mind.models",
    "gresnet32_64": "avalanche_mind.models",
    "small_cnn": "avalanche_mind.models",
}
"""Public name -> the module that defines it."""

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    """Import a public name's module on first use and keep the name here (later uses are plain lookups)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
