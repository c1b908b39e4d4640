"""MIND (Multi-Task Incremental Network Distillation) for Avalanche."""
import warnings as _warnings

with _warnings.catch_warnings():
    # Avalanche imports qpsolvers (for GEM, unused here), which warns at import that no
    # QP solver is installed: noise for every user of this package, so it is imported once here.
    _warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
    import avalanche.training  # noqa: F401

from avalanche_mind.core.layers import FREE, GatedConv2d, GatedLinear, gate_model, gated_layers
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.strategy import MIND, default_mind_evaluator
from avalanche_mind.inference.metrics import TAgAccuracy, TaskIdAccuracy, TAwAccuracy, mind_metrics
from avalanche_mind.models import gresnet32, gresnet32_64, small_cnn
from avalanche_mind.settings import PAPER_SETTINGS

__all__ = [
    "PAPER_SETTINGS",
    "FREE",
    "GatedConv2d",
    "GatedLinear",
    "MIND",
    "OwnershipMap",
    "TAgAccuracy",
    "TAwAccuracy",
    "TaskIdAccuracy",
    "default_mind_evaluator",
    "gate_model",
    "gated_layers",
    "gresnet32",
    "gresnet32_64",
    "mind_metrics",
    "small_cnn",
]
