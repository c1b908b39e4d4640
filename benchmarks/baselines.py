"""Backbones and Avalanche's baselines (PackNet, LwF, Naive, Joint) as the runner builds them.

Every strategy gets the same backbone, built by :func:`build_backbone` from the
same code as MIND's gated model, and only the changes a baseline needs:

* **MIND**: the backbone with its Conv2d/Linear gated (``gate_model``), BatchNorm kept.
* **Naive, LwF, Joint**: the plain (ungated) backbone with BatchNorm.
* **PackNet**: Avalanche 0.6.0's ``PackNetModel.wrap`` refuses any module with
  ``running_mean``/``running_var`` (BatchNorm, even with
  ``track_running_stats=False``, still has those attributes) and any other module
  with parameters of its own (GroupNorm/LayerNorm with affine terms). So PackNet's
  BatchNorm layers become ``GroupNorm(groups, C, affine=False)``: no running
  statistics and no shared affine parameters that a later task could overwrite.

PackNet is built from ``SupervisedTemplate`` plus ``PackNetPlugin`` rather than
Avalanche's ``PackNet`` wrapper, whose ``plugins`` argument is nested inside
another list (``plugins=[PackNetPlugin(...), plugins]``) so user plugins, such as
the evaluator's probes, are silently skipped. :class:`PackNetTAg` also gives
PackNet what the comparison needs and Avalanche's lacks:

* the PackNet task id of each experience (the benchmarks have no task labels, so
  the template's ``mb_task_labels`` are all 0 and PackNet would train task 0 forever);
* a multi-head classifier, as in the PackNet paper: in class-incremental streams the
  last Linear layer is not pruned; each task trains only its own classes' rows
  (cross-entropy on its output slice, so other rows get exactly zero gradient). In
  domain-incremental streams every task has the same classes, so the classifier is
  pruned like every other layer;
* task-agnostic inference with MIND's own rule (``avalanche_mind.inference.predict``):
  every input goes through each task's mask, the tempered max-softmax of that
  task's output slice picks the task, and the prediction is the argmax in it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
from avalanche.training import LwF, Naive
from avalanche.training.supervised import JointTraining
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import Adam, AdamW

from avalanche_mind.inference import Prediction, predict
from avalanche_mind.layers import gate_model, ungate
from avalanche_mind.models.gresnet import ResNet, small_cnn
from avalanche_mind.strategy import experience_classes
from avalanche_mind.task_id import STATISTICS_RULES, ScoreStatistics, gather_statistics

# ------------------------------------------------------------------ backbones


def build_backbone(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The plain backbone (ungated, BatchNorm): ``resnet`` (ResNet-32 with 5 blocks per stage) or ``small_cnn``."""
    if name == "resnet":
        return ResNet(num_classes, in_channels=in_channels, **kwargs)
    if name == "small_cnn":
        return ungate(small_cnn(num_classes, in_channels=in_channels, **kwargs))
    raise ValueError(f"unknown backbone {name!r}; use 'resnet' or 'small_cnn'")


def mind_backbone(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The same backbone with its Conv2d/Linear layers gated, as MIND needs."""
    return gate_model(build_backbone(name, num_classes, in_channels, **kwargs))


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups``."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def replace_batchnorm(model: nn.Module, groups: int) -> nn.Module:
    """Swap every BatchNorm for ``GroupNorm(g, C, affine=False)``, in place (what PackNetModel accepts)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.GroupNorm(_groups(child.num_features, groups), child.num_features, affine=False))
        else:
            replace_batchnorm(child, groups)
    return model


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear layer (the classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise TypeError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def packnet_backbone(
    name: str, num_classes: int, in_channels: int, groups: int, prune_classifier: bool, **kwargs: Any
) -> PackNetModel:
    """The backbone with GroupNorm for BatchNorm, wrapped by ``PackNetModel`` (classifier optionally unwrapped)."""
    model = replace_batchnorm(build_backbone(name, num_classes, in_channels, **kwargs), groups)
    if prune_classifier:
        packnet = PackNetModel(model)
    else:
        head_name = classifier_name(model)
        head = model.get_submodule(head_name)
        _set_submodule(model, head_name, nn.Identity())  # kept out of PackNet's pruning: per-task rows
        packnet = PackNetModel(model)
        _set_submodule(packnet.wrappee, head_name, head)
    _fix_bias_flags(packnet)
    return packnet


def _fix_bias_flags(packnet: PackNetModel) -> None:
    """Work around an Avalanche 0.6.0 bug that crashes PackNet on bias-free layers.

    ``WeightAndBiasPackNetModule`` sets ``has_bias`` from ``isinstance(wrappee.weight,
    nn.Parameter)`` (the weight, not the bias), so ``freeze_pruned`` later runs
    ``wrappee.bias.requires_grad = False`` on ``bias=None``. The paper's ResNet has
    bias-free convolutions and classifier.
    """
    for module in packnet.modules():
        if isinstance(module, WeightAndBiasPackNetModule):
            module.has_bias = isinstance(getattr(module.wrappee, "bias", None), nn.Parameter)


def normalisation_of(model: nn.Module) -> str:
    """A short description of the normalisation layers in ``model``, for the report."""
    kinds = set()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            kinds.add("BatchNorm (running statistics, affine)")
        elif isinstance(m, nn.GroupNorm):
            kinds.add(f"GroupNorm (affine={m.affine}, no running statistics)")
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


# ------------------------------------------------------------------ PackNet


class _PackNetBank:
    """What ``avalanche_mind.inference.predict`` needs: the logits of every task's sub-network."""

    def __init__(self, model: PackNetModel, n_tasks: int) -> None:
        self.model, self.n_tasks = model, n_tasks
        # The module that computes the logits: a PackNet-wrapped Linear, or a plain one (multi-head classifier).
        modules = list(model.modules())
        wrapped = {id(m.wrappee) for m in modules if isinstance(getattr(m, "wrappee", None), nn.Module)}
        linears = [m for m in modules if (isinstance(m, nn.Linear) and id(m) not in wrapped)
                   or isinstance(getattr(m, "wrappee", None), nn.Linear)]
        self.classifier = linears[-1]

    def features_and_logits(self, x: Tensor, task: int):
        captured: List[Tensor] = []
        hook = self.classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            logits = self.logits(x, task)
        finally:
            hook.remove()
        return captured[-1], logits

    def __len__(self) -> int:
        return self.n_tasks

    def logits(self, x: Tensor, task: int) -> Tensor:
        return self.model(x, torch.full((len(x),), task, dtype=torch.long, device=x.device))

    def all_logits(self, x: Tensor) -> List[Tensor]:
        return [self.logits(x, t) for t in range(self.n_tasks)]


def prune_schedule(n_experiences: int) -> List[float]:
    """Prune proportions that give each experience an equal share of the weights (MIND's 'equal').

    Before experience ``i`` a fraction ``(n - i) / n`` of the weights is free;
    keeping ``1 / (n - i)`` of it leaves each experience ``1 / n`` of the layer.
    """
    return [1.0 - 1.0 / (n_experiences - i) for i in range(n_experiences)]


class PackNetTAg(SupervisedTemplate):
    """Avalanche's PackNet (``PackNetModel`` + ``PackNetPlugin``) with task ids and TAw/TAg inference.

    :param temperature: softmax temperature of the task choice (MIND's rule).
    :param task_inference: ``max_confidence`` or ``entropy``, as in MIND.
    """

    def __init__(
        self,
        *,
        model: PackNetModel,
        optimizer: torch.optim.Optimizer,
        n_experiences: int,
        post_prune_epochs: int,
        temperature: float,
        task_inference: str = "max_confidence",
        plugins: Optional[Sequence[SupervisedPlugin]] = None,
        **kwargs: Any,
    ) -> None:
        packnet = PackNetPlugin(post_prune_epochs, prune_proportion=prune_schedule(n_experiences))
        super().__init__(model=model, optimizer=optimizer, plugins=[packnet, *(plugins or [])], **kwargs)
        self.temperature = temperature
        self.task_inference = task_inference
        self.slices: List[Tensor] = []
        self.experience_ids: List[int] = []
        self.statistics = ScoreStatistics()
        self.eval_task = -1
        self.last_prediction: Optional[Prediction] = None

    @property
    def train_task(self) -> int:
        return len(self.slices) - 1

    def _before_training_exp(self, **kwargs) -> None:
        classes = experience_classes(self.experience)
        self.slices.append(torch.tensor(classes, dtype=torch.long, device=self.device))
        self.experience_ids.append(int(self.experience.current_experience))
        super()._before_training_exp(**kwargs)

    def _after_training_exp(self, **kwargs) -> None:
        super()._after_training_exp(**kwargs)  # PackNetPlugin commits the task here
        # The same training-data score statistics as MIND's, so every task-inference rule applies.
        bank = _PackNetBank(self.model, self.model.task_count)
        gather_statistics(self.statistics, self.model, bank.features_and_logits, self.slices, self.train_task,
                          self.experience.dataset.eval(), self.eval_mb_size, self.device)

    def _before_eval_exp(self, **kwargs) -> None:
        exp_id = int(self.experience.current_experience)
        known = [t for t, e in enumerate(self.experience_ids) if e == exp_id]
        self.eval_task = known[-1] if known else -1
        super()._before_eval_exp(**kwargs)

    def _after_eval(self, **kwargs) -> None:
        super()._after_eval(**kwargs)
        self.last_prediction = None

    def forward(self) -> Tensor:
        if self.is_training:
            ids = torch.full((len(self.mb_x),), self.train_task, dtype=torch.long, device=self.device)
            return self.model(self.mb_x, ids)
        n_tasks = self.model.task_count
        rule = self.task_inference
        if rule in STATISTICS_RULES and not self.statistics.complete(n_tasks):
            rule = "max_confidence"
        self.last_prediction = predict(
            _PackNetBank(self.model, n_tasks), self.mb_x, self.slices[:n_tasks], self.temperature,
            rule, true_task=self.eval_task if self.eval_task >= 0 else None, statistics=self.statistics,
        )
        return self.last_prediction.output

    def criterion(self) -> Tensor:
        if not self.is_training:
            return self._criterion(self.mb_output, self.mb_y)
        slice_ = self.slices[self.train_task]
        lookup = torch.full((int(slice_.max()) + 1,), -1, dtype=torch.long, device=self.device)
        lookup[slice_] = torch.arange(len(slice_), device=self.device)
        return F.cross_entropy(self.mb_output[:, slice_], lookup[self.mb_y])


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


def _schedule(ctx) -> EpochLR:
    p = ctx.preset
    return EpochLR(p.teacher_lr, p.baseline_milestones, p.lr_gamma)


def _single_head(strategy_class, ctx, **extra):
    """A single-head baseline on the plain backbone: AdamW, the derived schedule, TAw/TAg scoring."""
    p = ctx.preset
    model = build_backbone(p.model, ctx.num_classes, ctx.in_channels, **p.model_kwargs)
    return strategy_class(
        model=model, optimizer=_adamw(model, p.teacher_lr, p.weight_decay), criterion=nn.CrossEntropyLoss(),
        plugins=[_schedule(ctx), SingleHeadPrediction(), *ctx.plugins], **_common(ctx), **extra,
    )


def build_naive(ctx):
    return _single_head(Naive, ctx)


def build_lwf(ctx):
    return _single_head(LwF, ctx, alpha=ctx.preset.lwf_alpha, temperature=ctx.preset.lwf_temperature)


def build_joint(ctx):
    return _single_head(JointTraining, ctx)


def build_packnet(ctx):
    p = ctx.preset
    if p.weight_decay:
        raise ValueError(
            "PackNet with weight_decay > 0 would move its frozen weights: PackNetModel only zeroes "
            "their gradients, and AdamW's decoupled weight decay still shrinks them. Use weight_decay=0 "
            "(the paper's setting) for the comparison."
        )
    model = packnet_backbone(
        p.model, ctx.num_classes, ctx.in_channels, p.packnet_groups,
        prune_classifier=ctx.scenario == "domain", **p.model_kwargs,
    )
    # Adam, not AdamW: PackNetPlugin re-creates the optimiser at every experience as
    # ``optimizer.__class__(params, **optimizer.defaults)``, which torch's AdamW rejects
    # (its defaults hold ``decoupled_weight_decay``). At weight decay 0 they are identical.
    return PackNetTAg(
        model=model, optimizer=Adam(model.parameters(), lr=p.teacher_lr), criterion=nn.CrossEntropyLoss(),
        n_experiences=ctx.n_experiences, post_prune_epochs=p.train_epochs, temperature=p.temperature,
        plugins=[_schedule(ctx), *ctx.plugins], **_common(ctx),
    )


BASELINES: Mapping[str, Callable] = {
    "packnet": build_packnet,
    "lwf": build_lwf,
    "naive": build_naive,
    "joint": build_joint,
}
