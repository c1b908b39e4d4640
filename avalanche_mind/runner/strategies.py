"""The strategies a comparison can run, by name: MIND's rows and Avalanche's baselines.

A row of MIND is MIND's keywords on top of the preset's: ``mind`` takes MIND's
defaults (and the preset's ``mind_kwargs``), ``mind-paper`` the paper's method
exactly (``PAPER_SETTINGS``), and the ablation rungs one change each from the paper;
:func:`~avalanche_mind.core.config.resolve_settings` orders them as ``train`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List

from avalanche_mind.core.config import resolve_settings
from avalanche_mind.core.strategy import MIND
from avalanche_mind.models import build_model
from avalanche_mind.runner.baselines import BASELINES
from avalanche_mind.runner.names import DEFAULT_STRATEGIES, LADDER, NEGATIVES, STRATEGY_NAMES
from avalanche_mind.runner.presets import Preset
from avalanche_mind.settings import check_names


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as the runner knows it: its label in the table and how to build it for a run."""

    label: str
    build: Callable[["RunContext"], Any]
    joint: bool = False
    """Trained once on the whole stream (one accuracy-matrix row) instead of experience by experience."""


@dataclass
class RunContext:
    """What a strategy builder needs; the same for every strategy of a run except the probes."""

    preset: Preset
    n_experiences: int
    num_classes: int
    in_channels: int
    scenario: str  # "class" or "domain"
    device: str
    seed: int = 0
    evaluator: Any = None
    plugins: List[Any] = field(default_factory=list)


def build_mind(ctx: RunContext, paper: bool = False, **variant: Any) -> MIND:
    """MIND on the gated backbone with the preset's settings; ``paper``: from ``PAPER_SETTINGS``; plus ``variant``."""
    p = ctx.preset
    settings = resolve_settings(p.mind_keywords(paper), paper, variant)
    model = build_model(p.model, ctx.num_classes, ctx.in_channels, **p.model_kwargs)
    return MIND(model=model, n_experiences=ctx.n_experiences, **settings,
                device=ctx.device, plugins=ctx.plugins, evaluator=ctx.evaluator, seed=ctx.seed)


NEGATIVE_MEMORY = 20
"""Images per class the rehearsal reference keeps (used only as negatives)."""

STRATEGIES: Dict[str, StrategySpec] = {
    "mind": StrategySpec("MIND", build_mind),
    "mind-paper": StrategySpec("MIND (paper's settings)", partial(build_mind, paper=True)),
    # Rungs of the ablation ladder between the paper's method and the defaults.
    "mind-paper-he": StrategySpec("MIND paper, He re-init of new weights",
                                  partial(build_mind, paper=True, new_weights="random")),
    "mind-paper-rotation": StrategySpec("MIND paper + rotation rejection",
                                        partial(build_mind, paper=True, rejection="rotation")),
    "mind-sd": StrategySpec("MIND self-distillation (paper's settings)",
                            partial(build_mind, paper=True, self_distillation=True)),
    "mind-packnet-like": StrategySpec(
        "MIND PackNet-like (SD, beta 0, BN frozen)",
        partial(build_mind, paper=True, self_distillation=True, beta=0.0, bn_per_task=False),
    ),
    "mind-paper-js": StrategySpec("MIND paper, true Jensen-Shannon instead of the authors' symmetric KL",
                                  partial(build_mind, paper=True, distill_loss="js")),
    # Cross-task negatives (avalanche_mind.core.negatives): MIND's defaults plus one source each,
    # the rehearsal reference, and PackNet with the same negatives where they apply.
    "mind-no-negatives": StrategySpec("MIND without negatives", partial(build_mind, negatives=None)),
    "mind-negatives-transforms": StrategySpec("MIND + negatives: transforms",
                                              partial(build_mind, negatives="transforms")),
    "mind-negatives-features": StrategySpec("MIND + negatives: features", partial(build_mind, negatives="features")),
    "mind-negatives-inversion": StrategySpec("MIND + negatives: inversion",
                                             partial(build_mind, negatives="inversion")),
    "mind-negative-memory": StrategySpec(f"MIND + rehearsal negatives ({NEGATIVE_MEMORY}/class, reference)",
                                         partial(build_mind, negatives=None, negative_memory=NEGATIVE_MEMORY)),
    "packnet-negatives-transforms": StrategySpec("PackNet + negatives: transforms",
                                                 partial(BASELINES["packnet"], negatives="transforms")),
    "packnet-negatives-features": StrategySpec("PackNet + negatives: features",
                                               partial(BASELINES["packnet"], negatives="features")),
    "packnet-negative-memory": StrategySpec(f"PackNet + rehearsal negatives ({NEGATIVE_MEMORY}/class, reference)",
                                            partial(BASELINES["packnet"], negative_memory=NEGATIVE_MEMORY)),
    "packnet": StrategySpec("PackNet", BASELINES["packnet"]),
    "lwf": StrategySpec("LwF", BASELINES["lwf"]),
    "ewc": StrategySpec("EWC", BASELINES["ewc"]),
    "si": StrategySpec("SI", BASELINES["si"]),
    "naive": StrategySpec("Naive (lower bound)", BASELINES["naive"]),
    "joint": StrategySpec("Joint (upper bound)", BASELINES["joint"], joint=True),
}

check_names("runner.strategies.STRATEGIES", STRATEGIES, STRATEGY_NAMES)  # the help lists runner.names'


__all__ = ["DEFAULT_STRATEGIES", "LADDER", "NEGATIVES", "NEGATIVE_MEMORY", "STRATEGIES", "RunContext", "StrategySpec",
           "build_mind"]
