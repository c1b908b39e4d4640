"""MIND's hyperparameters in one validated, frozen object.

:class:`MINDConfig` is built once by :class:`~avalanche_mind.MIND` from its keyword
arguments, checked once here, and saved whole: checkpoints store it, a resume
compares it whole (every setting that changes what training does must match), and
W&B logs it as the run's configuration. Its field defaults are the only place the
defaults are written: MIND's signature, the command line, the runner's presets (which
hold only what they change), :class:`~avalanche_mind.inference.predictor.Predictor`
and the export read them from here, and :func:`resolve_settings` is the one place the
keywords of a run are combined (preset < ``PAPER_SETTINGS`` < explicit keywords).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

# Names only, no torch: presets and the command line's help read this module cheaply.
from avalanche_mind.settings import (
    DISTILL_LOSS_NAMES,
    NEGATIVE_SOURCES,
    NEW_WEIGHTS,
    PAPER_SETTINGS,
    REJECTIONS,
    check_rule,
)

STRUCTURAL_KEYS = ("n_experiences", "capacity", "self_distillation", "weight_sharing", "bn_per_task")
"""Settings that define what the saved weights mean: a checkpoint and the strategy loading it always agree."""
EVAL_KEYS = ("temperature", "task_inference", "eval_mb_size")
"""Inference-only settings: a strategy loading a checkpoint keeps its own."""
ALLOCATION_RULES = ("random", "magnitude")
"""How allocation picks an experience's FREE weights (MIND picks by ``self_distillation``)."""


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> None:
    """A finite real number (not a string, not a bool) >= ``minimum`` (> if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def _check_milestones(name: str, value: Any) -> None:
    """A sequence of integer epochs (not a string, not fractional)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of integer epochs such as [40], got {value!r}")
    for epoch in value:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"{name} must be a list of integer epochs >= 0 such as [40], got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_capacity(capacity: Any) -> None:
    """ValueError unless ``capacity`` is "equal" or a float in (0, 1); MINDConfig's rule, which OwnershipMap shares."""
    if capacity != "equal" and not (isinstance(capacity, float) and 0.0 < capacity < 1.0):
        raise ValueError(f"capacity must be 'equal' or a float in (0, 1), got {capacity!r}")


def check_allocation_rule(rule: Any) -> None:
    """ValueError unless ``rule`` is one of :data:`ALLOCATION_RULES` (any other would silently pick by magnitude)."""
    if rule not in ALLOCATION_RULES:
        raise ValueError(f"unknown allocation rule {rule!r}; use 'random' or 'magnitude'")


@dataclass(frozen=True)
class MINDConfig:
    """Every hyperparameter of a MIND run, with its meaning and its default.

    One ``:param`` per row of the README's arguments table, which
    ``benchmarks/readme_tables.py`` writes from this docstring and the field defaults.

    :param n_experiences: experiences the capacity is split into (an upper bound with a fractional
        ``capacity``; it sizes the ownership map); training one more is refused.
    :param teacher_epochs: epochs of the teacher phase.
    :param train_epochs: epochs of the distillation phase.
    :param teacher_lr: the teacher phase's AdamW learning rate.
    :param teacher_milestones: the teacher phase's MultiStepLR milestones (epochs).
    :param lr: the distillation phase's AdamW learning rate, reset at every experience.
    :param milestones: the distillation phase's MultiStepLR milestones (stepped once per epoch).
    :param lr_gamma: MultiStepLR's factor, both phases.
    :param weight_decay: AdamW's weight decay, both phases.
    :param train_mb_size: training minibatch size.
    :param eval_mb_size: evaluation minibatch size.
    :param beta: weight of the distillation term.
    :param distill_loss: "js" (Jensen-Shannon), "symmetric_kl" (the authors' code: the mean of both
        KLs, about 4x JS near agreement), "kl", "cosine" or "l2".
    :param temperature: softmax temperature of the TAg task choice (test time only).
    :param self_distillation: the teacher is trained in place on FREE weights (one network held)
        instead of as a fresh copy of the model.
    :param new_weights: start of the weights given to experience t >= 1: "zero" (with weight sharing,
        student t starts as sub-network t-1, as in the authors' code) or "random" (He normal).
    :param negatives: cross-task negatives, shown with a uniform target on the slice
        in both phases, never updating BatchNorm's running statistics (see
        :mod:`avalanche_mind.core.negatives`): "features" (earlier classes' stored feature Gaussians
        through the new slice's classifier), "inversion" (images rebuilt from earlier sub-networks and
        their BatchNorm snapshots), "transforms" (current inputs mixed across classes or
        patch-shuffled), or None.
    :param negative_weight: weight of the negatives' term.
    :param negative_memory: the rehearsal reference, **not exemplar-free**: k real images per class
        kept and used only as negatives of later experiences (0: off).
    :param rejection: "rotation": train-time rejection of foreign inputs (each batch turned by
        90/180/270 degrees, uniform target on the slice, both phases), or None.
    :param rejection_weight: weight of the rotation rejection term.
    :param weight_sharing: sub-network t uses the weights of experiences 0..t (True) or only t's.
    :param bn_per_task: one BatchNorm snapshot per experience (True) or experience 0's only.
    :param task_inference: how TAg picks a sub-network: "max_confidence" (the paper's), "entropy",
        "max_logit", "energy", or a rule on statistics of training data: "zscore",
        "likelihood_ratio", "shared_foreign" (see :mod:`avalanche_mind.task_id.rules`).
    :param capacity: "equal" (numel // n_experiences per layer, the paper's rule: needs the stream
        length) or a float f in (0, 1): each experience gets the fraction f of every layer's
        still-FREE weights, so ``n_experiences`` is only an upper bound (e.g. ``capacity=0.1,
        n_experiences=100``).
    :param optimizer: recorded: the class name of the distillation optimiser in use (MIND's
        ``optimizer`` keyword takes your own instance).
    :param teacher_optimizer: recorded: the class name of the teacher's optimiser (MIND's
        ``teacher_optimizer`` keyword takes your own factory).

    The schedule and optimiser defaults are the paper's CIFAR-100/10 settings;
    ``self_distillation``, ``task_inference`` and ``negatives`` default to the configuration
    chosen on the validation split (``compare --validation``, 3 seeds); ``PAPER_SETTINGS``
    gives the paper's. ``lr``/``weight_decay`` record the distillation optimiser's actual
    values, so a configuration describes what ran even with a user's own optimiser.
    """

    n_experiences: int
    teacher_epochs: int = 50
    train_epochs: int = 50
    train_mb_size: int = 256
    eval_mb_size: int = 512
    beta: float = 5.0
    distill_loss: str = "js"
    temperature: float = 6.5
    self_distillation: bool = True
    weight_sharing: bool = True
    bn_per_task: bool = True
    task_inference: str = "likelihood_ratio"
    new_weights: str = "zero"
    rejection: Optional[str] = None
    rejection_weight: float = 1.0
    negatives: Optional[str] = "features"
    negative_weight: float = 1.0
    negative_memory: int = 0
    lr: float = 0.035
    milestones: Tuple[int, ...] = (40,)
    teacher_lr: float = 0.005
    teacher_milestones: Tuple[int, ...] = (35,)
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    capacity: Union[str, float] = "equal"
    optimizer: str = "AdamW"
    teacher_optimizer: str = "AdamW"

    def __post_init__(self) -> None:
        for name in ("n_experiences", "train_mb_size", "eval_mb_size"):
            _check_int(name, getattr(self, name), 1)
        for name in ("teacher_epochs", "train_epochs"):
            _check_int(name, getattr(self, name), 0)
        if self.distill_loss not in DISTILL_LOSS_NAMES:
            raise ValueError(f"unknown distill_loss {self.distill_loss!r}; use one of {sorted(DISTILL_LOSS_NAMES)}")
        check_rule(self.task_inference)
        if self.new_weights not in NEW_WEIGHTS:
            raise ValueError(f"unknown new_weights {self.new_weights!r}; use one of {list(NEW_WEIGHTS)}")
        if self.rejection not in REJECTIONS:
            raise ValueError(f"unknown rejection {self.rejection!r}; use one of {list(REJECTIONS)}")
        if self.negatives not in NEGATIVE_SOURCES:
            raise ValueError(f"unknown negatives {self.negatives!r}; use one of {list(NEGATIVE_SOURCES)}")
        _check_int("negative_memory", self.negative_memory, 0)
        for name in ("rejection_weight", "negative_weight", "beta", "weight_decay"):
            _check_number(name, getattr(self, name))
        for name in ("temperature", "lr", "teacher_lr", "lr_gamma"):
            _check_number(name, getattr(self, name), strict=True)
        for name in ("milestones", "teacher_milestones"):
            _check_milestones(name, getattr(self, name))
            object.__setattr__(self, name, tuple(int(m) for m in getattr(self, name)))
        for name in ("self_distillation", "weight_sharing", "bn_per_task"):
            _check_bool(name, getattr(self, name))
        check_capacity(self.capacity)
        for name in ("lr", "teacher_lr", "beta", "temperature", "rejection_weight", "negative_weight", "lr_gamma",
                     "weight_decay"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def training_keys(self) -> Tuple[str, ...]:
        """Settings that change how later experiences train: a strict resume requires them equal."""
        return tuple(f.name for f in dataclasses.fields(self) if f.name not in STRUCTURAL_KEYS + EVAL_KEYS)

    def to_dict(self) -> Dict[str, Any]:
        """Plain values (lists for milestones): what checkpoints store and W&B logs."""
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        values["teacher_milestones"] = list(self.teacher_milestones)
        return values

    def replace(self, **changes: Any) -> "MINDConfig":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def differences(self, saved: Mapping[str, Any], strict: bool) -> List[str]:
        """``key: checkpoint has A, this one has B`` for every structural (and, if ``strict``, training) setting."""
        current = self.to_dict()
        keys = STRUCTURAL_KEYS + (self.training_keys if strict else ())
        return [f"{key}: checkpoint has {saved.get(key, '<missing>')!r}, this one has {current[key]!r}"
                for key in keys if saved.get(key, "<missing>") != current[key]]


DEFAULTS = {f.name: f.default for f in dataclasses.fields(MINDConfig) if f.default is not dataclasses.MISSING}
"""Every default, by name (the command line and the runner read them here)."""
SETTINGS = tuple(name for name in DEFAULTS if name not in ("optimizer", "teacher_optimizer"))
"""What a preset, ``PAPER_SETTINGS`` and explicit keywords may set: MIND's keywords of plain values (``optimizer``
and ``teacher_optimizer`` record class names; MIND's keywords of those names take optimisers)."""


def resolve_settings(preset: Mapping[str, Any], paper: bool, overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """MIND's keywords for a run: a preset's, then ``PAPER_SETTINGS`` if ``paper``, then explicit ``overrides``.

    The one place this precedence is written (the ``train`` command and the comparison
    runner both use it). A keyword none of them sets is left out, so MINDConfig's
    default applies; an unknown name is a ValueError here rather than a TypeError
    deep inside the strategy.
    """
    settings = {**preset, **(PAPER_SETTINGS if paper else {}), **overrides}
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown MIND setting(s) {', '.join(unknown)}; MIND's settings: "
                         f"{', '.join(sorted(SETTINGS))}")
    return settings


__all__ = ["ALLOCATION_RULES", "DEFAULTS", "EVAL_KEYS", "MINDConfig", "SETTINGS", "STRUCTURAL_KEYS",
           "check_allocation_rule", "check_capacity", "resolve_settings"]
