"""MIND as an Avalanche strategy: a ``SupervisedTemplate`` whose experience procedure reads top to bottom.

For each experience t (:meth:`MIND._prepare_experience`, run where Avalanche has
built the data loader and optimiser and before any plugin's ``before_training_exp``):

1. teacher phase (:class:`TeacherPlugin`, phase ``TEACHER``): learn t alone on its output slice;
2. allocation (:meth:`OwnershipMap.allocate`): give FREE weights to t;
3. BatchNorm: with ``bn_per_task=False``, back to experience 0's snapshot, frozen
   (before gating, whose weight guard copies the frozen terms);
4. gating (:class:`GatingPlugin`): route through t's sub-network, freeze the rest;
5. distillation (phase ``DISTILL``): the template's own training loop, loss
   ``CE + beta * D(teacher, student)`` on t's output slice (:meth:`MIND.criterion`);
6. after it (:meth:`MIND._finish_experience`): t's BatchNorm snapshot, then its score
   statistics for task identification (:func:`gather_task_statistics`), so every
   plugin's ``after_training_exp`` (checkpoints, loggers) sees the experience complete.

The phase (:class:`~avalanche_mind.core.phase.Phase`, kept in :class:`MINDState`)
refuses calls out of order with a :class:`PhaseError`.

In eval, ``mb_output`` is a full-width vector whose argmax is the task-agnostic (TAg)
answer, so Avalanche's metrics work unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from avalanche.core import BasePlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import MultiStepLR

from avalanche_mind.core.snapshots import account_parameters, experience_state, freeze_to
from avalanche_mind.core.config import MINDConfig
from avalanche_mind.core.distributed import average_batchnorm_statistics, check_same_start
from avalanche_mind.core.evaluation import TaskAgnosticEvaluation
from avalanche_mind.core.layers import ensure_gated
from avalanche_mind.core.loading import DataParallelLoading
from avalanche_mind.core.losses import DISTILL_LOSSES, rotation_rejection_loss
from avalanche_mind.core.negatives import NegativePool, negative_pool, negatives_to_store
from avalanche_mind.core.ownership import Capacity, OwnershipMap, forward_from_classifier
from avalanche_mind.core.phase import Phase
from avalanche_mind.core.state import MINDState
from avalanche_mind.errors import PhaseError, diverged
from avalanche_mind.inference.bank import Prediction, SubnetworkBank
from avalanche_mind.inference.metrics import default_mind_evaluator
from avalanche_mind.io.strategy_state import load_strategy_state, strategy_state
from avalanche_mind.logging.progress import DistillationProgressPlugin
from avalanche_mind.plugins.gating import GatingPlugin
from avalanche_mind.plugins.teacher import OptimizerFactory, TeacherContext, TeacherPlugin
from avalanche_mind.task_id import check_rule
from avalanche_mind.task_id.gather import gather_task_statistics

_D = MINDConfig  # the defaults below are MINDConfig's, written once there


class MIND(TaskAgnosticEvaluation, DataParallelLoading, SupervisedTemplate):
    """Multi-Task Incremental Network Distillation (Bonato et al., AAAI 2024).

    :param model: any model with Conv2d/Linear layers; gated in place if it is not
        already (see :func:`avalanche_mind.gate_model`). Its last Linear layer is the
        classifier, whose width bounds the class ids.
    :param optimizer: distillation optimiser (default AdamW(lr, weight_decay)); its
        state and learning rate are reset at every experience, and MultiStepLR
        (``milestones``, ``lr_gamma``) steps it once per epoch.
    :param teacher_optimizer: callable ``params -> Optimizer`` for the teacher phase
        (default AdamW(teacher_lr, weight_decay)); MultiStepLR(``teacher_milestones``).
    :param seed: seed of the allocation and teacher initialisation (default:
        ``torch.initial_seed()``).
    :param verbose: show a progress bar (loss, learning rate) for each phase of each experience.

    Every other keyword is a hyperparameter, documented and validated once in
    :class:`~avalanche_mind.core.config.MINDConfig` (:attr:`config`), which checkpoints
    store whole and W&B logs; ``device``, ``plugins``, ``evaluator``, ``eval_every``
    and further keywords are Avalanche's.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        n_experiences: int,
        teacher_epochs: int = _D.teacher_epochs,
        train_epochs: int = _D.train_epochs,
        train_mb_size: int = _D.train_mb_size,
        eval_mb_size: int = _D.eval_mb_size,
        device: Union[str, torch.device] = "cpu",
        plugins: Optional[Sequence[BasePlugin]] = None,
        evaluator: Union[EvaluationPlugin, Callable[[], EvaluationPlugin], None] = default_mind_evaluator,
        eval_every: int = -1,
        beta: float = _D.beta,
        distill_loss: str = _D.distill_loss,
        temperature: float = _D.temperature,
        self_distillation: bool = _D.self_distillation,
        weight_sharing: bool = _D.weight_sharing,
        bn_per_task: bool = _D.bn_per_task,
        task_inference: str = _D.task_inference,
        new_weights: str = _D.new_weights,
        rejection: Optional[str] = _D.rejection,
        rejection_weight: float = _D.rejection_weight,
        negatives: Optional[str] = _D.negatives,
        negative_weight: float = _D.negative_weight,
        negative_memory: int = _D.negative_memory,
        optimizer: Optional[Optimizer] = None,
        lr: float = _D.lr,
        milestones: Sequence[int] = _D.milestones,
        teacher_optimizer: Optional[OptimizerFactory] = None,
        teacher_lr: float = _D.teacher_lr,
        teacher_milestones: Sequence[int] = _D.teacher_milestones,
        lr_gamma: float = _D.lr_gamma,
        weight_decay: float = _D.weight_decay,
        capacity: Capacity = _D.capacity,
        seed: Optional[int] = None,
        verbose: bool = False,
        **base_kwargs,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(verbose, bool):
            raise ValueError(f"verbose must be True or False, got {verbose!r}")
        if optimizer is not None:  # the configuration records what actually runs
            group = optimizer.param_groups[0]
            lr, weight_decay = group.get("initial_lr", group["lr"]), group.get("weight_decay", 0.0)
        arguments = locals()
        self.config = MINDConfig(
            **{f.name: arguments[f.name] for f in fields(MINDConfig) if f.name not in ("optimizer", "teacher_optimizer")},
            optimizer=type(optimizer).__name__ if optimizer is not None else "AdamW",
            teacher_optimizer=(getattr(teacher_optimizer, "__qualname__", type(teacher_optimizer).__name__)
                               if teacher_optimizer is not None else "AdamW"),
        )
        config = self.config
        ensure_gated(model)
        account_parameters(model)  # every parameter gated or kept per experience; the rest refused, named
        self.ownership = OwnershipMap(model, n_experiences, capacity)
        self.state = MINDState()
        self.seed = seed if seed is not None else torch.initial_seed()
        self.generator = torch.Generator().manual_seed(self.seed)
        self.distill_loss = DISTILL_LOSSES[config.distill_loss]
        self.verbose = verbose
        self.scheduler: Optional[MultiStepLR] = None
        self.eval_task = -1
        self.training_rng: Optional[Dict[str, Any]] = None  # torch random states outside an evaluation
        self.last_prediction: Optional[Prediction] = None
        self._bank: Optional[SubnetworkBank] = None
        self.negatives: Optional[NegativePool] = None  # the experience being trained's cross-task negatives
        self.negative_log: List[Dict[str, float]] = []  # per inverted task: BatchNorm-matching loss, accuracy
        self._finite_loss: Optional[Tensor] = None  # all distillation losses of the epoch finite (no host sync)
        self._classifier_checked = False  # the model's output comes from ownership.classifier

        if optimizer is None:
            optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if teacher_optimizer is None:
            def teacher_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
                return AdamW(params, lr=config.teacher_lr, weight_decay=config.weight_decay)
        # The plugins hook Avalanche's callbacks; the other steps are calls (see the module docstring).
        self.teacher_plugin = TeacherPlugin(
            config.teacher_epochs, teacher_optimizer, config.teacher_milestones, config.lr_gamma,
            config.self_distillation,
        )
        self.gating = GatingPlugin()  # its per-step callbacks keep frozen weights bit-identical
        mind_plugins: List[BasePlugin] = [
            self.teacher_plugin, self.gating,
            DistillationProgressPlugin(),  # the teacher's bar is drawn by the TeacherPlugin
        ]
        super().__init__(
            model=model,
            optimizer=optimizer,
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=config.train_mb_size,
            train_epochs=config.train_epochs,
            eval_mb_size=config.eval_mb_size,
            device=device,
            plugins=mind_plugins + list(plugins or []),
            evaluator=evaluator,
            eval_every=eval_every,
            **base_kwargs,
        )

    # ------------------------------------------------------- configuration
    @property
    def n_experiences(self) -> int:
        return self.config.n_experiences

    @property
    def task_inference(self) -> str:
        """The TAg task choice; may be changed between evaluations (it does not affect training)."""
        return self.config.task_inference

    @task_inference.setter
    def task_inference(self, rule: str) -> None:
        check_rule(rule)
        self.config = self.config.replace(task_inference=rule)

    @property
    def temperature(self) -> float:
        return self.config.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.config = self.config.replace(temperature=value)

    def state_dict(self) -> Dict[str, Any]:
        """Everything MIND must remember to continue exactly: configuration, weights and
        ownership, :class:`MINDState`, optimiser, scheduler, generator, clock and the
        evaluator's metric state, as tensors and plain values (see
        :mod:`avalanche_mind.io.strategy_state`)."""
        return strategy_state(self)

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True, source: str = "the state") -> None:
        """Restore :meth:`state_dict` into this MIND, built with the same configuration.

        ``strict``: also the training settings must match (else only those that
        define the weights' meaning); inference settings stay this strategy's own.
        """
        if self.phase is not Phase.IDLE:
            raise PhaseError(f"MIND cannot load a state during its {self.phase.value} phase; load it between calls")
        skipped = load_strategy_state(self, state, strict=strict, source=source)
        if skipped:
            warnings.warn(f"{source}: not restored: {'; '.join(skipped)}; metrics that span experiences "
                          "(forgetting) start afresh", stacklevel=3)

    # -------------------------------------------------------------- tasks
    @property
    def current_task(self) -> int:
        """MIND's id of the experience being (or last) trained."""
        return self.state.n_tasks - 1

    @property
    def zero_start(self) -> bool:
        """Whether the experience being trained starts its new weights at zero (see ``new_weights``)."""
        return self.config.new_weights == "zero" and self.config.weight_sharing and self.current_task > 0

    def rejection_loss(self, network: nn.Module, x: Tensor, y: Tensor, slice_: Tensor) -> Tensor:
        """The train-time rejection terms of ``network`` on the minibatch ``x`` (labels ``y``): rotation
        rejection and cross-task negatives (0 when both are off)."""
        config, loss = self.config, x.new_zeros(())
        if config.rejection is not None and config.rejection_weight > 0:
            loss = loss + config.rejection_weight * rotation_rejection_loss(network, x, slice_)
        if self.negatives is not None and config.negative_weight > 0:
            loss = loss + config.negative_weight * self.negatives.loss(
                network, x, y, slice_, network.get_submodule(self.ownership.classifier_name))
        return loss

    @property
    def n_outputs(self) -> Optional[int]:
        classifier = self.ownership.classifier
        return classifier.out_features if classifier is not None else None

    @property
    def phase(self) -> Phase:
        """The phase of the procedure now running (``Phase.IDLE`` between calls)."""
        return self.state.phase

    def output_slice(self, task: int) -> Tensor:
        """Class ids of ``task`` as an index tensor on the strategy's device."""
        return self.state.output_slice(task, self.device)

    def slice_position(self, task: int) -> Tensor:
        """Lookup class id -> position inside ``task``'s output slice (-1 outside)."""
        return self.state.slice_position(task, self.n_outputs or 0, self.device)

    # ----------------------------------------------------------- procedure
    def _before_training_exp(self, **kwargs) -> None:
        check_same_start(self.model, self.generator)  # under torchrun: every rank agrees
        self.state.begin_experience(self.model, self.generator)
        self.state.register(self.experience, n_experiences=self.n_experiences, n_outputs=self.n_outputs)
        super()._before_training_exp(**kwargs)  # data loader, optimiser, MIND's steps, then plugins

    def check_model_and_optimizer(self, **kwargs) -> None:
        """Avalanche prepares the model and optimiser here, last before the plugins' ``before_training_exp``:
        MIND prepares the experience right after, so every plugin sees it ready for distillation."""
        super().check_model_and_optimizer(**kwargs)
        self._prepare_experience()

    def _prepare_experience(self) -> None:
        """Steps 1-4 for the current experience t, in order."""
        config, task = self.config, self.current_task
        self.state.phases.enter(Phase.TEACHER, "train the teacher")
        self.negatives = negative_pool(config.negatives, config.negative_memory, self.state.slices, task,
                                       self.state.negative_bank, self.state.score_statistics, self.device)
        self.teacher_plugin.train(TeacherContext(
            model=self.model, ownership=self.ownership, task=task,
            experience_id=int(self.experience.current_experience), slice_=self.output_slice(task),
            positions=self.slice_position(task), loader=self.dataloader, dataset=self.experience.dataset.eval(),
            batch_size=self.eval_mb_size, device=self.device, generator=self.generator, zero_start=self.zero_start,
            forward=self.checked_forward, extra_loss=self.rejection_loss, verbose=self.verbose,
        ))
        self.ownership.allocate(task, self.state.slices[task], rule="magnitude" if config.self_distillation
                                else "random", generator=self.generator, zero_start=self.zero_start)
        if not config.bn_per_task and task > 0:
            freeze_to(self.model, self.state.bn_snapshots[0])
        self.gating.gate(self.model, self.ownership, task, config.weight_sharing,
                         per_experience_trainable=config.bn_per_task or task == 0)
        self.state.phases.enter(Phase.DISTILL, "distil into the sub-network")

    def _after_training_exp(self, **kwargs) -> None:
        self._finish_experience()
        super()._after_training_exp(**kwargs)  # plugins: checkpoints and loggers see t complete
        self.state.end_experience()  # the experience (and its checkpoint, if any) is complete

    def _finish_experience(self) -> None:
        """Step 6: t's BatchNorm snapshot, then its score statistics; the teacher is released."""
        self.teacher_plugin.release()
        average_batchnorm_statistics(self.model)
        self.state.bn_snapshots.append(experience_state(self.model))
        slices = [self.output_slice(t) for t in range(self.state.n_tasks)]
        gather_task_statistics(self.model, self.ownership, self.state, self.config.weight_sharing, slices,
                               self.experience.dataset.eval(), self.eval_mb_size, self.device)
        self.negatives = None
        task = self.current_task
        stored, inversion = negatives_to_store(
            self.model, self.ownership, self.state, self.config, task, self.experience.dataset.eval(),
            torch.Generator().manual_seed((self.seed * 1009 + task) % 2**63), last=task + 1 >= self.n_experiences,
        )
        self.state.negative_bank.append(stored)
        if inversion is not None:
            self.negative_log.append(inversion)

    def criterion(self) -> Tensor:
        """Step 5, the distillation loss, in training; cross-entropy of the TAg output in eval."""
        if not self.is_training:
            return self._criterion(self.mb_output, self.mb_y)
        task = self.current_task
        slice_ = self.output_slice(task)
        student = self.mb_output[:, slice_]
        loss = F.cross_entropy(student, self.slice_position(task)[self.mb_y])
        if self.config.beta > 0:
            index = self.mbatch[2] if self.config.self_distillation else None
            loss = loss + self.config.beta * self.distill_loss(self.teacher_plugin.logits(self.mb_x, index, slice_),
                                                               student)
        loss = loss + self.rejection_loss(self.model, self.mb_x, self.mb_y, slice_)
        finite = torch.isfinite(loss.detach())
        self._finite_loss = finite if self._finite_loss is None else self._finite_loss & finite
        return loss

    # ------------------------------------------------------------ training
    def train(self, experiences, eval_streams=None, **kwargs):
        """Avalanche's ``train``; an experience whose training fails (an error, Ctrl-C) is undone.

        Its registration, allocation and weights only take effect when its training
        completes, so the same experience can be trained again in the same process.
        """
        if self.phase is not Phase.IDLE:
            raise PhaseError(f"MIND cannot start train() during its {self.phase.value} phase: an experience is "
                             "being trained or evaluated; call train() again after that call returns")
        try:
            return super().train(experiences, eval_streams, **kwargs)
        except BaseException as error:
            self._roll_back()
            if isinstance(error, RuntimeError) and "without overflow" in str(error):
                # A finite but huge learning rate overflows float32 inside the optimiser's update.
                experience = getattr(getattr(self, "experience", None), "current_experience", "?")
                raise diverged(f"an optimizer step overflowed float32 in experience {experience} (learning "
                               f"rates lr={self.config.lr:g}, teacher_lr={self.config.teacher_lr:g})") from error
            raise

    def _roll_back(self) -> None:
        """Undo the experience whose training failed: registration, allocation, weights, teacher, negatives."""
        self.state.roll_back(self.model, self.generator)
        self.teacher_plugin.release()
        self.negatives = None
        self._finite_loss = None
        if self.state.n_tasks > 0:
            self.ownership.activate(self.state.n_tasks - 1, self.config.weight_sharing)

    def make_optimizer(self, **kwargs) -> None:
        """Fresh optimiser state, initial learning rate and scheduler for every experience."""
        kwargs.pop("reset_optimizer_state", None)
        super().make_optimizer(reset_optimizer_state=True, **kwargs)
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"])
        self.scheduler = MultiStepLR(self.optimizer, milestones=list(self.config.milestones), gamma=self.config.lr_gamma)

    def _after_training_epoch(self, **kwargs) -> None:
        finite, self._finite_loss = self._finite_loss, None
        if finite is not None and not bool(finite):
            raise diverged(f"the loss became NaN or infinite in experience {self.experience.current_experience} "
                           f"(MIND task {self.current_task}), distillation phase, epoch "
                           f"{self.clock.train_exp_epochs + 1} of {self.train_epochs}", beta=True)
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    def checked_forward(self, network: nn.Module, x: Tensor) -> Tensor:
        """``network(x)``, checking once per strategy that the output comes from the classifier."""
        if self._classifier_checked:
            return network(x)
        out = forward_from_classifier(network, x, self.ownership.classifier_name)
        self._classifier_checked = True
        return out
