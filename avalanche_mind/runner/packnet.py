"""Avalanche's PackNet as the comparison runs it: the shared backbone, task ids, TAw and TAg.

Avalanche 0.6.0's ``PackNetModel.wrap`` refuses any module with
``running_mean``/``running_var`` (BatchNorm, even with ``track_running_stats=False``,
still has those attributes) and any other module with parameters of its own
(GroupNorm/LayerNorm with affine terms). So PackNet's BatchNorm layers become
``GroupNorm(groups, C, affine=False)``: no running statistics and no shared affine
parameters that a later task could overwrite.

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
* task-agnostic inference with MIND's own rule (``avalanche_mind.inference.bank.predict``):
  every input goes through each task's mask, the tempered max-softmax of that
  task's output slice picks the task, and the prediction is the argmax in it.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.models.packnet import PackNetModel, PackNetPlugin, WeightAndBiasPackNetModule
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.core.negatives import NegativePool, memory_images, negative_pool
from avalanche_mind.core.state import experience_classes
from avalanche_mind.inference.bank import Prediction, predict
from avalanche_mind.models import build_model
from avalanche_mind.settings import NEGATIVE_SOURCES
from avalanche_mind.task_id import STATISTICS_RULES, ScoreStatistics
from avalanche_mind.task_id.gather import gather_statistics


# ------------------------------------------------------------------ the backbone
def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups``."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def replace_batchnorm(model: nn.Module, groups: int) -> nn.Module:
    """Swap every BatchNorm for ``GroupNorm(g, C, affine=False)``, in place (what PackNetModel accepts)."""
    for name, norm in batchnorm_modules(model):
        _set_submodule(model, name, nn.GroupNorm(_groups(norm.num_features, groups), norm.num_features, affine=False))
    return model


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear layer (the classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise TypeError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def packnet_backbone(
    name: str, num_classes: int, in_channels: int, groups: int, prune_classifier: bool, **kwargs: Any
) -> PackNetModel:
    """The plain backbone, GroupNorm for BatchNorm, wrapped by ``PackNetModel`` (classifier optionally unwrapped)."""
    model = replace_batchnorm(build_model(name, num_classes, in_channels, gated=False, **kwargs), groups)
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


def prune_schedule(n_experiences: int) -> List[float]:
    """Prune proportions that give each experience an equal share of the weights (MIND's 'equal').

    Before experience ``i`` a fraction ``(n - i) / n`` of the weights is free;
    keeping ``1 / (n - i)`` of it leaves each experience ``1 / n`` of the layer.
    """
    return [1.0 - 1.0 / (n_experiences - i) for i in range(n_experiences)]


# ------------------------------------------------------------------ the strategy
class _PackNetBank:
    """What ``avalanche_mind.inference.bank.predict`` needs: the logits of every task's sub-network."""

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


class PackNetTAg(SupervisedTemplate):
    """Avalanche's PackNet (``PackNetModel`` + ``PackNetPlugin``) with task ids and TAw/TAg inference.

    :param temperature: softmax temperature of the task choice (MIND's rule).
    :param task_inference: any of MIND's task-choice rules (``max_confidence`` by default).
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
        negatives: Optional[str] = None,
        negative_memory: int = 0,
        negative_weight: float = 1.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if negatives == "inversion":
            raise ValueError(
                "negatives='inversion' rebuilds inputs from BatchNorm statistics, which PackNet here does not "
                "keep (GroupNorm without running statistics); use 'transforms' or 'features' with PackNet"
            )
        if negatives not in NEGATIVE_SOURCES:
            raise ValueError(f"unknown negatives {negatives!r}; use one of {list(NEGATIVE_SOURCES)}")
        packnet = PackNetPlugin(post_prune_epochs, prune_proportion=prune_schedule(n_experiences))
        super().__init__(model=model, optimizer=optimizer, plugins=[packnet, *(plugins or [])], **kwargs)
        self.temperature = temperature
        self.task_inference = task_inference
        self.slices: List[Tensor] = []
        self.experience_ids: List[int] = []
        self.statistics = ScoreStatistics()
        self.eval_task = -1
        self.last_prediction: Optional[Prediction] = None
        self.negatives, self.negative_memory, self.negative_weight = negatives, negative_memory, negative_weight
        self.seed, self.n_experiences = seed, n_experiences
        self.negative_bank: List[Tensor] = []  # per task: the rehearsal reference's stored images
        self.pool: Optional[NegativePool] = None

    @property
    def train_task(self) -> int:
        return len(self.slices) - 1

    def _before_training_exp(self, **kwargs) -> None:
        classes = experience_classes(self.experience)
        self.slices.append(torch.tensor(classes, dtype=torch.long, device=self.device))
        self.experience_ids.append(int(self.experience.current_experience))
        self.pool = negative_pool(self.negatives, self.negative_memory, [t.tolist() for t in self.slices],
                                  self.train_task, self.negative_bank, self.statistics, self.device)
        super()._before_training_exp(**kwargs)

    def _after_training_exp(self, **kwargs) -> None:
        super()._after_training_exp(**kwargs)  # PackNetPlugin commits the task here
        self.pool = None
        if self.negative_memory > 0 and self.train_task + 1 < self.n_experiences:
            generator = torch.Generator().manual_seed(self.seed * 1009 + self.train_task)
            self.negative_bank.append(memory_images(self.experience.dataset.eval(), self.negative_memory, generator))
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
        loss = F.cross_entropy(self.mb_output[:, slice_], lookup[self.mb_y])
        if self.pool is not None and self.negative_weight > 0:
            bank = _PackNetBank(self.model, self.train_task + 1)
            network = _TaskForward(bank, self.train_task)
            loss = loss + self.negative_weight * self.pool.loss(network, self.mb_x, self.mb_y, slice_, bank.classifier)
        return loss


class _TaskForward(nn.Module):
    """One PackNet task's forward pass as a module (what the negatives' loss calls)."""

    def __init__(self, bank: "_PackNetBank", task: int) -> None:
        super().__init__()
        self.bank, self.task = bank, task

    def forward(self, x: Tensor) -> Tensor:
        return self.bank.logits(x, self.task)
