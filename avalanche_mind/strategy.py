"""MIND as an Avalanche strategy: a ``SupervisedTemplate`` that orders four plugins.

For each experience t, in ``before_training_exp`` and in this order:
teacher phase (:class:`TeacherPlugin`) -> allocation of FREE weights to t
(:class:`AllocationPlugin`) -> gating to t's sub-network (:class:`GatingPlugin`)
-> BatchNorm handling (:class:`BatchNormPlugin`). The template's own training
loop is then the distillation phase, with loss ``CE + beta * D(teacher, student)``
on t's output slice. In eval, ``mb_output`` is a full-width vector whose argmax is
the task-agnostic (TAg) answer, so Avalanche's metrics work unchanged.
"""
from __future__ import annotations

import copy
import math
import numbers
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from avalanche.core import BasePlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from avalanche_mind.errors import TrainingDivergedError
from avalanche_mind.inference import Prediction, SubnetworkBank, predict
from avalanche_mind.layers import gate_model, gated_layers
from avalanche_mind.losses import DISTILL_LOSSES
from avalanche_mind.metrics import default_mind_evaluator  # noqa: F401 (re-exported)
from avalanche_mind.ownership import Capacity, OwnershipMap
from avalanche_mind.plugins.allocation import AllocationPlugin
from avalanche_mind.plugins.batchnorm import BatchNormPlugin, frozen_running_statistics
from avalanche_mind.plugins.gating import GatingPlugin
from avalanche_mind.plugins.statistics import ScoreStatisticsPlugin
from avalanche_mind.plugins.teacher import IndexedDataset, OptimizerFactory, TeacherPlugin
from avalanche_mind.progress import DistillationProgressPlugin
from avalanche_mind.settings import NEW_WEIGHTS, PAPER_SETTINGS, REJECTIONS  # noqa: F401 (PAPER_SETTINGS re-exported)
from avalanche_mind.state import MINDState
from avalanche_mind.task_id import STATISTICS_RULES, check_rule, rotations, uniform_target_loss



def experience_classes(experience) -> List[int]:
    """Sorted class ids of an experience, from its classes timeline or its targets."""
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        classes = experience.dataset.targets.uniques
    return sorted(int(c) for c in classes)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value, *, minimum: float = 0.0, strict: bool = False) -> None:
    """A finite real number (not a string, not a bool) >= ``minimum`` (> if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")


def _check_milestones(name: str, value) -> None:
    """A sequence of integer epochs (not a string, not fractional)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of integer epochs such as [40], got {value!r}")
    for epoch in value:
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"{name} must be a list of integer epochs >= 0 such as [40], got {value!r}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


class MIND(SupervisedTemplate):
    """Multi-Task Incremental Network Distillation (Bonato et al., AAAI 2024).

    :param model: any model with Conv2d/Linear layers; gated in place if it is not
        already (see :func:`avalanche_mind.gate_model`). Its last Linear layer is the
        classifier, whose width bounds the class ids.
    :param n_experiences: how many experiences the model's capacity is split into
        (``capacity="equal"``), or, with a fractional ``capacity``, only an upper
        bound on the number of experiences (it sizes the int8/int16 ownership map);
        training one experience more is refused in both cases.
    :param teacher_epochs: epochs of the teacher phase; ``train_epochs``: epochs of
        the distillation phase.
    :param beta: weight of the distillation term. ``distill_loss``: "js", "kl",
        "cosine" or "l2". ``temperature``: softmax temperature of the TAg task choice.
    :param self_distillation: train the teacher in place on FREE weights (one
        network held) instead of a fresh copy of the model.
    :param weight_sharing: sub-network t uses weights of tasks 0..t (True) or only t.
    :param bn_per_task: one BatchNorm snapshot per experience (True) or task 0's only.
    :param task_inference: how the TAg choice picks a sub-network: "max_confidence" (the
        paper's), "entropy", "max_logit", "energy", "zscore" or "likelihood_ratio" (the last
        two use score statistics gathered from training data; see
        :mod:`avalanche_mind.task_id`).
    :param new_weights: "zero": with weight sharing, weights newly given to experience
        t >= 1 start at zero, so its student starts as sub-network t-1 (the authors'
        code); "random": He-normal re-initialisation.
    :param rejection: train-time rejection of foreign inputs: None (the paper) or
        "rotation": in both phases, each batch rotated by 90/180/270 degrees is also
        shown to the network with a uniform target on the output slice (outlier
        exposure with surrogate foreign inputs), weighted by ``rejection_weight``.
    :param optimizer: distillation optimiser (default AdamW(lr, weight_decay)); its
        state and learning rate are reset at every experience, and MultiStepLR
        (``milestones``, ``lr_gamma``) steps it once per epoch.
    :param teacher_optimizer: callable ``params -> Optimizer`` for the teacher phase
        (default AdamW(teacher_lr, weight_decay)); MultiStepLR(``teacher_milestones``).
    :param capacity: "equal" (numel // n_experiences per layer, the paper's rule,
        which needs the stream length in advance) or a float ``f`` in (0, 1): each
        experience gets the fraction ``f`` of the weights still FREE in every layer
        (experience ``t`` about ``f * (1 - f) ** t`` of it), which needs no stream
        length: for example ``capacity=0.1, n_experiences=100`` trains any stream of up
        to 100 experiences.
    :param seed: seed of the allocation and teacher initialisation (default:
        ``torch.initial_seed()``).
    :param verbose: show a progress bar (loss, learning rate) for each phase of each experience.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        n_experiences: int,
        teacher_epochs: int = 50,
        train_epochs: int = 50,
        train_mb_size: int = 256,
        eval_mb_size: int = 512,
        device: Union[str, torch.device] = "cpu",
        plugins: Optional[Sequence[BasePlugin]] = None,
        evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin], None] = default_mind_evaluator,
        eval_every: int = -1,
        beta: float = 5.0,
        distill_loss: str = "js",
        temperature: float = 6.5,
        self_distillation: bool = True,
        weight_sharing: bool = True,
        bn_per_task: bool = True,
        task_inference: str = "shared_foreign",
        new_weights: str = "random",
        rejection: Optional[str] = None,
        rejection_weight: float = 1.0,
        optimizer: Optional[Optimizer] = None,
        lr: float = 0.035,
        milestones: Sequence[int] = (40,),
        teacher_optimizer: Optional[OptimizerFactory] = None,
        teacher_lr: float = 0.005,
        teacher_milestones: Sequence[int] = (35,),
        lr_gamma: float = 0.5,
        weight_decay: float = 0.0,
        capacity: Capacity = "equal",
        seed: Optional[int] = None,
        verbose: bool = False,
        **base_kwargs,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _check_int("n_experiences", n_experiences, 1)
        _check_int("teacher_epochs", teacher_epochs, 0)
        _check_int("train_epochs", train_epochs, 0)
        _check_int("train_mb_size", train_mb_size, 1)
        if distill_loss not in DISTILL_LOSSES:
            raise ValueError(f"unknown distill_loss {distill_loss!r}; use one of {sorted(DISTILL_LOSSES)}")
        check_rule(task_inference)
        if new_weights not in NEW_WEIGHTS:
            raise ValueError(f"unknown new_weights {new_weights!r}; use one of {list(NEW_WEIGHTS)}")
        if rejection not in REJECTIONS:
            raise ValueError(f"unknown rejection {rejection!r}; use one of {list(REJECTIONS)}")
        _check_int("eval_mb_size", eval_mb_size, 1)
        _check_number("rejection_weight", rejection_weight)
        _check_number("beta", beta)
        _check_number("temperature", temperature, strict=True)
        _check_number("lr", lr, strict=True)
        _check_number("teacher_lr", teacher_lr, strict=True)
        _check_number("lr_gamma", lr_gamma, strict=True)
        _check_number("weight_decay", weight_decay)
        _check_milestones("milestones", milestones)
        _check_milestones("teacher_milestones", teacher_milestones)
        for flag, value in (("self_distillation", self_distillation), ("weight_sharing", weight_sharing),
                            ("bn_per_task", bn_per_task), ("verbose", verbose)):
            _check_bool(flag, value)

        empty = [f"{name} has shape {list(p.shape)}" for name, p in model.named_parameters() if p.numel() == 0]
        if empty:
            raise ValueError(
                f"the model has empty layers ({', '.join(empty[:3])}): every layer needs at least one "
                "weight; check the model's size arguments (e.g. width >= 1)"
            )
        if next(gated_layers(model), None) is None:
            gate_model(model)
        else:
            plain = [repr(name or type(model).__name__) for name, module in model.named_modules()
                     if type(module) in (nn.Conv2d, nn.Linear)]
            if plain:
                raise ValueError(
                    f"the model is only partly gated: {', '.join(plain[:5])}"
                    + (f" and {len(plain) - 5} more" if len(plain) > 5 else "")
                    + " are plain nn.Conv2d/nn.Linear layers, which MIND neither splits between "
                    "experiences nor protects (experience 0 would train them, later ones would find "
                    "them frozen). Gate the whole model: avalanche_mind.gate_model(model) gates the "
                    "remaining layers and keeps the gated ones."
                )
        self.n_experiences = n_experiences
        self.ownership = OwnershipMap(model, n_experiences, capacity)
        self.state = MINDState()
        self.generator = torch.Generator().manual_seed(seed if seed is not None else torch.initial_seed())
        self.beta = float(beta)
        self.distill_loss_name = distill_loss
        self.distill_loss = DISTILL_LOSSES[distill_loss]
        self.temperature = float(temperature)
        self.self_distillation = self_distillation
        self.weight_sharing = weight_sharing
        self.bn_per_task = bn_per_task
        self.task_inference = task_inference
        self.new_weights = new_weights
        self.rejection = rejection
        self.rejection_weight = float(rejection_weight)
        self.milestones = list(milestones)
        self.lr_gamma = lr_gamma
        self.verbose = verbose
        self.scheduler: Optional[MultiStepLR] = None
        self.eval_task = -1
        self.last_prediction: Optional[Prediction] = None
        self._bank: Optional[SubnetworkBank] = None
        self._slice_cache: Dict[int, Tensor] = {}
        self._position_cache: Dict[int, Tensor] = {}
        self._pending: Optional[Dict[str, object]] = None  # rollback point of the experience being trained
        self._finite_loss: Optional[Tensor] = None  # all distillation losses of the epoch finite (no host sync)
        self._classifier_checked = False  # the model's output comes from ownership.classifier

        if optimizer is None:
            optimizer = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        if teacher_optimizer is None:
            def teacher_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
                return AdamW(params, lr=teacher_lr, weight_decay=weight_decay)
        self.teacher_plugin = TeacherPlugin(
            teacher_epochs, teacher_optimizer, teacher_milestones, lr_gamma, self_distillation
        )
        mind_plugins: List[BasePlugin] = [
            self.teacher_plugin,
            AllocationPlugin("magnitude" if self_distillation else "random"),
            # BatchNorm before gating: with bn_per_task=False snapshot 0 must be loaded
            # before the weight guard copies the frozen affine terms it restores.
            BatchNormPlugin(),
            GatingPlugin(),
            ScoreStatisticsPlugin(),  # after the BatchNorm snapshot, before any user plugin (checkpoints)
            DistillationProgressPlugin(),  # the teacher's bar is drawn by the TeacherPlugin
        ]
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=mind_plugins + list(plugins or []),
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )

    # -------------------------------------------------------------- tasks
    @property
    def current_task(self) -> int:
        """MIND's id of the experience being (or last) trained."""
        return self.state.n_tasks - 1

    @property
    def zero_start(self) -> bool:
        """Whether the experience being trained starts its new weights at zero (see ``new_weights``)."""
        return self.new_weights == "zero" and self.weight_sharing and self.current_task > 0

    def rejection_loss(self, network: nn.Module, x: Tensor, slice_: Tensor) -> Tensor:
        """``rejection_weight`` x cross-entropy to uniform of ``network`` on rotated ``x`` (0 if off).

        BatchNorm's running statistics are not updated by the rotated pass, so the
        snapshot describes the task's own inputs only.
        """
        if self.rejection is None or self.rejection_weight == 0:
            return x.new_zeros(())
        with frozen_running_statistics(network):
            logits = network(rotations(x))[:, slice_]
        return self.rejection_weight * uniform_target_loss(logits)

    @property
    def n_outputs(self) -> Optional[int]:
        classifier = self.ownership.classifier
        return classifier.out_features if classifier is not None else None

    def output_slice(self, task: int) -> Tensor:
        """Class ids of ``task`` as an index tensor on the strategy's device."""
        if task not in self._slice_cache:
            self._slice_cache[task] = torch.tensor(self.state.slices[task], dtype=torch.long, device=self.device)
        return self._slice_cache[task]

    def slice_position(self, task: int) -> Tensor:
        """Lookup class id -> position inside ``task``'s output slice (-1 outside)."""
        if task not in self._position_cache:
            slice_ = self.output_slice(task)
            width = max(self.n_outputs or 0, int(slice_.max()) + 1)
            lookup = torch.full((width,), -1, dtype=torch.long, device=self.device)
            lookup[slice_] = torch.arange(len(slice_), device=self.device)
            self._position_cache[task] = lookup
        return self._position_cache[task]

    def _register_experience(self) -> None:
        if self.state.n_tasks >= self.n_experiences:
            raise ValueError(
                f"MIND was built with n_experiences={self.n_experiences} and has trained "
                f"{self.state.n_tasks} experiences: no capacity is left for another. Build MIND "
                "with n_experiences equal to the stream length, or with capacity=<fraction> and "
                "n_experiences a generous upper bound (e.g. capacity=0.1, n_experiences=100)."
            )
        if len(self.experience.dataset) == 0:
            raise ValueError(
                f"experience {self.experience.current_experience} has no samples: there is nothing to "
                "train on; leave it out of the stream"
            )
        classes = experience_classes(self.experience)
        if self.n_outputs is not None and classes and classes[-1] >= self.n_outputs:
            raise ValueError(
                f"experience {self.experience.current_experience} has class {classes[-1]}, but the "
                f"model's classifier has only {self.n_outputs} outputs; build the model with "
                f"num_classes >= {classes[-1] + 1} (the benchmark's total number of classes)."
            )
        if len(classes) == 1 and self.n_experiences > 1:
            warnings.warn(
                f"experience {self.experience.current_experience} has a single class ({classes[0]}): its "
                "sub-network answers every input with full confidence, so the task-agnostic (TAg) choice "
                "will favour it; task-aware (TAw) accuracy is unaffected. Give each experience two "
                "classes or more for TAg.",
                stacklevel=2,
            )
        self.state.slices.append(classes)
        self.state.experience_ids.append(int(self.experience.current_experience))

    # ------------------------------------------------------------ rollback
    def _rollback_point(self) -> Dict[str, object]:
        """What training one experience changes: restored if that training fails."""
        return {
            "n_tasks": self.state.n_tasks,
            "bn_snapshots": list(self.state.bn_snapshots),
            "score_statistics": copy.deepcopy(self.state.score_statistics),
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "generator": self.generator.get_state(),
        }

    def _roll_back(self) -> None:
        """Undo the registration, allocation and training of an experience whose training failed."""
        point, self._pending = self._pending, None
        if point is None:
            return
        n = int(point["n_tasks"])
        del self.state.slices[n:]
        del self.state.experience_ids[n:]
        self.state.bn_snapshots = list(point["bn_snapshots"])
        self.state.score_statistics = point["score_statistics"]
        with torch.no_grad():
            self.model.load_state_dict(point["model"])
        self.generator.set_state(point["generator"])
        self._slice_cache.clear()
        self._position_cache.clear()
        self.teacher_plugin.teacher = None
        self.teacher_plugin.recorded_logits = None
        self._finite_loss = None
        if n > 0:
            self.ownership.activate(n - 1, self.weight_sharing)

    def train(self, experiences, eval_streams=None, **kwargs):
        """Avalanche's ``train``; an experience whose training fails (an error, Ctrl-C) is undone.

        Its registration, allocation and weights only take effect when its training
        completes, so the same experience can be trained again in the same process.
        """
        try:
            return super().train(experiences, eval_streams, **kwargs)
        except BaseException:
            self._roll_back()
            raise

    # ------------------------------------------------------------ training
    def _before_training_exp(self, **kwargs) -> None:
        self._pending = self._rollback_point()
        self._register_experience()
        super()._before_training_exp(**kwargs)

    def _after_training_exp(self, **kwargs) -> None:
        super()._after_training_exp(**kwargs)
        self._pending = None  # the experience (and its checkpoint, if any) is complete

    def make_train_dataloader(
        self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False, drop_last=False, **kwargs
    ) -> None:
        """As Avalanche's, but in self-distillation each item carries its index (recorded teacher logits)."""
        if not self.self_distillation:
            return super().make_train_dataloader(
                num_workers=num_workers,
                shuffle=shuffle,
                pin_memory=pin_memory,
                persistent_workers=persistent_workers,
                drop_last=drop_last,
                **kwargs,
            )
        self.dataloader = DataLoader(
            IndexedDataset(self.adapted_dataset),
            batch_size=self.train_mb_size,
            shuffle=shuffle,
            num_workers=num_workers,
            pin_memory=bool(pin_memory),
            persistent_workers=persistent_workers and num_workers > 0,
            drop_last=drop_last,
        )

    def make_optimizer(self, **kwargs) -> None:
        """Fresh optimiser state, initial learning rate and scheduler for every experience."""
        kwargs.pop("reset_optimizer_state", None)
        super().make_optimizer(reset_optimizer_state=True, **kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"])
        self.scheduler = MultiStepLR(self.optimizer, milestones=self.milestones, gamma=self.lr_gamma)

    def _after_training_epoch(self, **kwargs) -> None:
        finite, self._finite_loss = self._finite_loss, None
        if finite is not None and not bool(finite):
            raise TrainingDivergedError(
                f"training diverged: the loss became NaN or infinite in experience "
                f"{self.experience.current_experience} (MIND task {self.current_task}), distillation phase, "
                f"epoch {self.clock.train_exp_epochs + 1} of {self.train_epochs}. Nothing of this "
                "experience was kept or saved; lower the learning rates (lr, teacher_lr) or beta and run it again."
            )
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    def criterion(self) -> Tensor:
        """Distillation loss in training; cross-entropy of the TAg output in eval."""
        if not self.is_training:
            return self._criterion(self.mb_output, self.mb_y)
        task = self.current_task
        student = self.mb_output[:, self.output_slice(task)]
        loss = F.cross_entropy(student, self.slice_position(task)[self.mb_y])
        if self.beta > 0:
            loss = loss + self.beta * self.distill_loss(self.teacher_plugin.logits(self), student)
        loss = loss + self.rejection_loss(self.model, self.mb_x, self.output_slice(task))
        finite = torch.isfinite(loss.detach())
        self._finite_loss = finite if self._finite_loss is None else self._finite_loss & finite
        return loss

    # ----------------------------------------------------------- inference
    def _before_eval(self, **kwargs) -> None:
        # Masked weights and BatchNorm state per sub-network: built once per eval.
        self._bank = None
        if self.state.n_tasks > 0:
            self._bank = SubnetworkBank(
                self.model, self.ownership, self.state.bn_snapshots, self.state.n_tasks, self.weight_sharing
            )
        super()._before_eval(**kwargs)

    def _after_eval(self, **kwargs) -> None:
        super()._after_eval(**kwargs)
        self._bank = None
        self.last_prediction = None

    def _before_eval_exp(self, **kwargs) -> None:
        self.eval_task = self.state.task_of_experience(int(self.experience.current_experience))
        super()._before_eval_exp(**kwargs)

    def checked_forward(self, network: nn.Module, x: Tensor) -> Tensor:
        """``network(x)``, checking (once per strategy) that its output is the classifier's.

        MIND takes the last ``nn.Linear`` registered in the model as the classifier
        (its rows are the output slices); a model registering another Linear after
        its output layer would otherwise be split along the wrong layer, silently.
        """
        if self._classifier_checked:
            return network(x)
        name = self.ownership.classifier_name
        module = dict(network.named_modules()).get(name) if name is not None else None
        if module is None:
            return network(x)
        captured: List[Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = network(x)
        finally:
            handle.remove()
        if not captured or captured[-1].shape != out.shape or not torch.equal(captured[-1], out):
            raise ValueError(
                f"MIND takes the last nn.Linear registered in the model, {name!r} "
                f"({module.in_features} -> {module.out_features}), as its classifier, but the model's "
                f"output (shape {list(out.shape)}) does not come from that layer. Register the output layer "
                "last in the model's __init__ (MIND splits the classifier's rows between experiences)."
            )
        self._classifier_checked = True
        return out

    def forward(self) -> Tensor:
        if self.is_training or self._bank is None:
            self.last_prediction = None
            if not self._classifier_checked:
                return self.checked_forward(self.model, self.mb_x)
            return self.model(self.mb_x)
        slices = [self.output_slice(t) for t in range(len(self._bank))]
        rule = self.task_inference
        if rule in STATISTICS_RULES and not self.state.score_statistics.complete(len(slices)):
            rule = "max_confidence"  # periodic eval inside an experience: its statistics come at its end
        self.last_prediction = predict(
            self._bank, self.mb_x, slices, self.temperature, rule,
            true_task=self.eval_task if self.eval_task >= 0 else None,
            statistics=self.state.score_statistics,
        )
        return self.last_prediction.output
