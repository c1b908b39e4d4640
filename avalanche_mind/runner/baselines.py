"""Avalanche's baselines as the comparison builds them: PackNet, LwF, EWC, SI, Naive and Joint training.

Every strategy gets the same backbone from :func:`avalanche_mind.models.build_model`,
and only the changes a baseline needs:

* **MIND**: the backbone with its Conv2d/Linear gated, BatchNorm kept.
* **Naive, LwF, EWC, SI, Joint**: the plain (ungated) backbone with BatchNorm, one head.
* **PackNet**: GroupNorm(affine=False) in place of BatchNorm (see :mod:`avalanche_mind.runner.packnet`).

The baselines' budget is MIND's: ``teacher_epochs + train_epochs`` epochs per
experience with MIND's teacher optimiser and the schedule :class:`EpochLR` derives.
Each baseline's own hyperparameters (LwF's alpha and temperature, EWC's and SI's
lambda, PackNet's learning rate and prune point) are preset fields, tuned on a
validation split by :mod:`avalanche_mind.runner.tuning`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import EWC, LwF, Naive
from avalanche.training.plugins import SynapticIntelligencePlugin
from avalanche.training.supervised import JointTraining
from torch import nn
from torch.optim import Adam, AdamW

from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.core.state import experience_classes
from avalanche_mind.inference.bank import Prediction
from avalanche_mind.models import build_model
from avalanche_mind.runner.packnet import PackNetTAg, packnet_backbone


def normalisation_of(model: nn.Module) -> str:
    """A short description of the normalisation layers in ``model``, for the report."""
    kinds = {"BatchNorm (running statistics, affine)"} if batchnorm_modules(model) else set()
    kinds.update(f"GroupNorm (affine={m.affine}, no running statistics)"
                 for m in model.modules() if isinstance(m, nn.GroupNorm))
    kinds.update(f"LayerNorm (affine={m.elementwise_affine})" for m in model.modules() if isinstance(m, nn.LayerNorm))
    return ", ".join(sorted(kinds)) or "none"


# ------------------------------------------------------------------ shared plugins
class EpochLR(SupervisedPlugin):
    """Sets the learning rate at the start of each epoch: ``lr * gamma ** (#milestones <= epoch)``.

    Stateless on purpose: ``PackNetPlugin`` replaces the optimiser object at every
    experience, which would orphan a ``torch.optim.lr_scheduler`` built on the old one.
    """

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float) -> None:
        super().__init__()
        self.lr, self.milestones, self.gamma = lr, sorted(milestones), gamma

    def before_training_epoch(self, strategy, **kwargs) -> None:
        epoch = strategy.clock.train_exp_epochs
        lr = self.lr * self.gamma ** sum(m <= epoch for m in self.milestones)
        for group in strategy.optimizer.param_groups:
            group["lr"] = lr


class SingleHeadPrediction(SupervisedPlugin):
    """Gives a single-head strategy MIND's ``last_prediction``, so ``mind_metrics`` score it too.

    TAg is the plain argmax over every output; TAw is the argmax restricted to the
    evaluated experience's classes (identical to TAg in domain-incremental streams);
    there is no task identification (``eval_task = -1``: TaskId is not emitted).
    """

    def before_eval_exp(self, strategy, **kwargs) -> None:
        strategy.eval_task = -1
        classes = experience_classes(strategy.experience)
        strategy.eval_classes = torch.tensor(classes, dtype=torch.long, device=strategy.device)

    def after_eval_forward(self, strategy, **kwargs) -> None:
        out = strategy.mb_output.detach()
        classes = strategy.eval_classes
        strategy.last_prediction = Prediction(
            output=out,
            tag_class=out.argmax(dim=1),
            task=torch.zeros(len(out), dtype=torch.long, device=out.device),
            taw_class=classes[out[:, classes].argmax(dim=1)],
        )

    def after_eval(self, strategy, **kwargs) -> None:
        strategy.last_prediction = None


class SynapticIntelligenceCopies(SynapticIntelligencePlugin):
    """Avalanche 0.6.0's SI with its weight snapshots copied, so that it works on the CPU.

    ``SynapticIntelligencePlugin.extract_weights`` stores ``param.detach().cpu().flatten()``:
    on a CUDA device a copy, on the CPU a view of the parameter itself. The optimiser
    then moves the "old" weights with the live ones, every path-integral step
    ``grad * (new - old)`` is zero, the importances stay zero and the anchor follows
    the weights: SI trains exactly as Naive fine-tuning. Copying the two snapshots
    the plugin keeps across a step (the anchor at the start of each experience and
    the weights before each iteration) restores the method.
    """

    def before_training_exp(self, strategy, **kwargs) -> None:
        super().before_training_exp(strategy, **kwargs)
        _own(self.ewc_data[0])

    def before_training_iteration(self, strategy, **kwargs) -> None:
        super().before_training_iteration(strategy, **kwargs)
        _own(self.syn_data["old_theta"])


def _own(snapshots) -> None:
    for value in snapshots.values():
        value.data = value.data.clone()


# ------------------------------------------------------------------ builders
def _adamw(model: nn.Module, lr: float, weight_decay: float) -> AdamW:
    return AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _common(ctx) -> Dict[str, Any]:
    p = ctx.preset
    return dict(
        train_mb_size=p.batch_size,
        train_epochs=p.baseline_epochs,
        eval_mb_size=p.eval_batch_size,
        device=ctx.device,
        evaluator=ctx.evaluator,
    )


def _schedule(ctx, lr: float) -> EpochLR:
    p = ctx.preset
    return EpochLR(lr, p.baseline_milestones, p.lr_gamma)


def _single_head(strategy_class, ctx, *method: SupervisedPlugin, **extra):
    """A single-head baseline on the plain backbone: AdamW, the derived schedule, TAw/TAg scoring.

    ``method``: plugins that make the method (e.g. SI's) on a plain ``Naive`` template.
    """
    p = ctx.preset
    model = build_model(p.model, ctx.num_classes, ctx.in_channels, gated=False, **p.model_kwargs)
    return strategy_class(
        model=model, optimizer=_adamw(model, p.teacher_lr, p.weight_decay), criterion=nn.CrossEntropyLoss(),
        plugins=[*method, _schedule(ctx, p.teacher_lr), SingleHeadPrediction(), *ctx.plugins],
        **_common(ctx), **extra,
    )


def build_naive(ctx):
    return _single_head(Naive, ctx)


def build_lwf(ctx):
    return _single_head(LwF, ctx, alpha=ctx.preset.lwf_alpha, temperature=ctx.preset.lwf_temperature)


def build_ewc(ctx):
    """EWC with one penalty per past experience (Avalanche's ``separate`` mode, the original EWC)."""
    return _single_head(EWC, ctx, ewc_lambda=ctx.preset.ewc_lambda, mode="separate")


def build_si(ctx):
    """Avalanche's ``SynapticIntelligence`` strategy (a template plus its plugin), with the plugin's CPU fix."""
    return _single_head(Naive, ctx, SynapticIntelligenceCopies(si_lambda=ctx.preset.si_lambda))


def build_joint(ctx):
    return _single_head(JointTraining, ctx)


def build_packnet(ctx, negatives=None, negative_memory: int = 0):
    """Avalanche's PackNet on the shared backbone; ``negatives``/``negative_memory`` as MIND's, where they apply."""
    p = ctx.preset
    if p.weight_decay:
        raise ValueError(
            "PackNet with weight_decay > 0 would move its frozen weights: PackNetModel only zeroes "
            "their gradients, and AdamW's decoupled weight decay still shrinks them. Use weight_decay=0 "
            "(the paper's setting) for the comparison."
        )
    lr, post_prune = p.packnet_schedule()
    if not 0 < post_prune < p.baseline_epochs:
        raise ValueError(f"PackNet's post-prune epochs must be between 1 and {p.baseline_epochs - 1} (of "
                         f"{p.baseline_epochs} epochs per experience), got {post_prune}")
    model = packnet_backbone(
        p.model, ctx.num_classes, ctx.in_channels, p.packnet_groups,
        prune_classifier=ctx.scenario == "domain", **p.model_kwargs,
    )
    # Adam, not AdamW: PackNetPlugin re-creates the optimiser at every experience as
    # ``optimizer.__class__(params, **optimizer.defaults)``, which torch's AdamW rejects
    # (its defaults hold ``decoupled_weight_decay``). At weight decay 0 they are identical.
    return PackNetTAg(
        model=model, optimizer=Adam(model.parameters(), lr=lr), criterion=nn.CrossEntropyLoss(),
        n_experiences=ctx.n_experiences, post_prune_epochs=post_prune, temperature=p.temperature,
        plugins=[_schedule(ctx, lr), *ctx.plugins], negatives=negatives, negative_memory=negative_memory,
        seed=ctx.seed, **_common(ctx),
    )


BASELINES: Mapping[str, Callable] = {
    "packnet": build_packnet,
    "lwf": build_lwf,
    "ewc": build_ewc,
    "si": build_si,
    "naive": build_naive,
    "joint": build_joint,
}
"""``build(ctx: RunContext)`` -> the baseline strategy, by the runner's strategy name."""
