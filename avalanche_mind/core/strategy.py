"""MIND as an Avalanche strategy: a ``SupervisedTemplate`` whose experience procedure reads top to bottom.

For each experience t (:meth:`MIND._prepare_experience`, run where Avalanche has
built the data loader and optimiser and before any plugin's ``before_training_exp``):

1. teacher phase (:class:`TeacherPlugin`): learn t alone on its output slice;
2. allocation (:class:`AllocationPlugin`): give FREE weights to t;
3. BatchNorm (:class:`BatchNormPlugin`): with ``bn_per_task=False``, back to experience
   0's snapshot, frozen (before gating, whose weight guard copies the frozen terms);
4. gating (:class:`GatingPlugin`): route through t's sub-network, freeze the rest;
5. distillation: the template's own training loop, loss ``CE + beta * D(teacher, student)``
   on t's output slice (:meth:`MIND.criterion`);
6. after it (:meth:`MIND._finish_experience`): t's BatchNorm snapshot, then its score
   statistics for task identification (:class:`ScoreStatisticsPlugin`), so every
   plugin's ``after_training_exp`` (checkpoints, loggers) sees the experience complete.

In eval, ``mb_output`` is a full-width vector whose argmax is the task-agnostic (TAg)
answer, so Avalanche's metrics work unchanged.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from avalanche.core import BasePlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from avalanche_mind.core.config import MINDConfig
from avalanche_mind.core.distributed import (
    average_batchnorm_statistics, average_gradients, check_same_start, is_distributed, set_epoch, shard_sampler,
)
from avalanche_mind.errors import TrainingDivergedError
from avalanche_mind.inference.bank import Prediction, SubnetworkBank, predict
from avalanche_mind.core.layers import ensure_gated
from avalanche_mind.core.losses import DISTILL_LOSSES, rotation_rejection_loss
from avalanche_mind.inference.metrics import default_mind_evaluator
from avalanche_mind.core.negatives import InversionSettings, NegativePool, invert, memory_images, negative_pool
from avalanche_mind.core.ownership import Capacity, OwnershipMap, forward_from_classifier
from avalanche_mind.core.allocation import AllocationPlugin
from avalanche_mind.core.batchnorm import BatchNormPlugin
from avalanche_mind.plugins.gating import GatingPlugin
from avalanche_mind.task_id.gather import ScoreStatisticsPlugin
from avalanche_mind.plugins.teacher import IndexedDataset, OptimizerFactory, TeacherPlugin
from avalanche_mind.logging.progress import DistillationProgressPlugin
from avalanche_mind.io.random_state import training_rng_kept
from avalanche_mind.settings import PAPER_SETTINGS  # noqa: F401 (re-exported)
from avalanche_mind.core.state import MINDState, experience_classes  # noqa: F401 (re-exported)
from avalanche_mind.io.strategy_state import load_strategy_state, roll_back, rollback_point, strategy_state
from avalanche_mind.task_id.rules import STATISTICS_RULES, check_rule

_D = MINDConfig  # the defaults below are MINDConfig's, written once there


class MIND(SupervisedTemplate):
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
        self.config = MINDConfig(
            n_experiences=n_experiences, teacher_epochs=teacher_epochs, train_epochs=train_epochs,
            train_mb_size=train_mb_size, eval_mb_size=eval_mb_size, beta=beta, distill_loss=distill_loss,
            temperature=temperature, self_distillation=self_distillation, weight_sharing=weight_sharing,
            bn_per_task=bn_per_task, task_inference=task_inference, new_weights=new_weights,
            rejection=rejection, rejection_weight=rejection_weight, negatives=negatives,
            negative_weight=negative_weight, negative_memory=negative_memory, lr=lr, milestones=milestones,
            teacher_lr=teacher_lr, teacher_milestones=teacher_milestones, lr_gamma=lr_gamma, weight_decay=weight_decay, capacity=capacity,
            optimizer=type(optimizer).__name__ if optimizer is not None else "AdamW",
            teacher_optimizer=(getattr(teacher_optimizer, "__qualname__", type(teacher_optimizer).__name__)
                               if teacher_optimizer is not None else "AdamW"),
        )
        config = self.config
        ensure_gated(model)
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
        self._slice_cache: Dict[int, Tensor] = {}
        self._position_cache: Dict[int, Tensor] = {}
        self._pending: Optional[Dict[str, object]] = None  # rollback point of the experience being trained
        self._finite_loss: Optional[Tensor] = None  # all distillation losses of the epoch finite (no host sync)
        self._classifier_checked = False  # the model's output comes from ownership.classifier

        if optimizer is None:
            optimizer = AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if teacher_optimizer is None:
            def teacher_optimizer(params: Iterable[nn.Parameter]) -> Optimizer:
                return AdamW(params, lr=config.teacher_lr, weight_decay=config.weight_decay)
        # The steps of the procedure; MIND calls them in order (see the module docstring).
        self.teacher_plugin = TeacherPlugin(
            config.teacher_epochs, teacher_optimizer, config.teacher_milestones, config.lr_gamma,
            config.self_distillation,
        )
        self.allocation = AllocationPlugin("magnitude" if config.self_distillation else "random")
        self.batchnorm = BatchNormPlugin()
        self.gating = GatingPlugin()  # its per-step callbacks keep frozen weights bit-identical
        self.statistics = ScoreStatisticsPlugin()
        mind_plugins: List[BasePlugin] = [
            self.teacher_plugin, self.allocation, self.batchnorm, self.gating, self.statistics,
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

    # ----------------------------------------------------------- procedure
    def _before_training_exp(self, **kwargs) -> None:
        check_same_start(self.model, self.generator)  # under torchrun: every rank agrees
        self._pending = rollback_point(self)
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
        self.negatives = negative_pool(config.negatives, config.negative_memory, self.state.slices, task,
                                       self.state.negative_bank, self.state.score_statistics, self.device)
        self.teacher_plugin.train(self, self.output_slice(task))
        self.allocation.allocate(self.ownership, task, self.state.slices[task], self.generator, self.zero_start)
        if not config.bn_per_task and task > 0:
            self.batchnorm.freeze_to(self.model, self.state.bn_snapshots[0])
        self.gating.gate(self.model, self.ownership, task, config.weight_sharing,
                         batchnorm_trainable=config.bn_per_task or task == 0)

    def _after_training_exp(self, **kwargs) -> None:
        self._finish_experience()
        super()._after_training_exp(**kwargs)  # plugins: checkpoints and loggers see t complete
        self._pending = None  # the experience (and its checkpoint, if any) is complete

    def _finish_experience(self) -> None:
        """Step 6: t's BatchNorm snapshot, then its score statistics; the teacher is released."""
        self.teacher_plugin.release()
        average_batchnorm_statistics(self.model)
        self.state.bn_snapshots.append(self.batchnorm.snapshot(self.model))
        slices = [self.output_slice(t) for t in range(self.state.n_tasks)]
        self.statistics.gather(self.model, self.ownership, self.state, self.config.weight_sharing, slices,
                               self.experience.dataset.eval(), self.eval_mb_size, self.device)
        self.negatives = None
        self.state.negative_bank.append(self._stored_negatives(self.current_task))

    # ---------------------------------------------------------- negatives
    def _stored_negatives(self, task: int) -> Tensor:
        """What later experiences will draw from for ``task`` (empty if nothing is stored or none will come)."""
        config = self.config
        kept: List[Tensor] = []
        if task + 1 < self.n_experiences:
            generator = torch.Generator().manual_seed(self.seed * 1009 + task)
            if config.negative_memory > 0:
                kept.append(memory_images(self.experience.dataset.eval(), config.negative_memory, generator))
            if config.negatives == "inversion":
                kept.append(self._inverted(task, generator))
        return torch.cat(kept) if kept else torch.empty(0)

    def _inverted(self, task: int, generator: torch.Generator) -> Tensor:
        """Images rebuilt from sub-network ``task`` and its BatchNorm snapshot (no real image used)."""
        bank = SubnetworkBank(self.model, self.ownership, self.state.bn_snapshots, self.state.n_tasks,
                              self.config.weight_sharing, mode="module")
        shape = tuple(self.experience.dataset[0][0].shape)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                result = invert(self.model, lambda x: bank.logits(x, task), self.state.bn_snapshots[task],
                                self.output_slice(task), shape, InversionSettings(), generator)
        finally:
            self.model.train(was_training)
        self.negative_log.append({"task": task, "bn_loss_start": result.bn_loss_start,
                                  "bn_loss_end": result.bn_loss_end, "accuracy": result.accuracy})
        return result.images

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
        try:
            return super().train(experiences, eval_streams, **kwargs)
        except BaseException as error:
            point, self._pending = self._pending, None
            roll_back(self, point)
            if isinstance(error, RuntimeError) and "without overflow" in str(error):
                # A finite but huge learning rate overflows float32 inside the optimiser's update.
                experience = getattr(getattr(self, "experience", None), "current_experience", "?")
                raise TrainingDivergedError(
                    f"training diverged: an optimizer step overflowed float32 in experience {experience} "
                    f"(learning rates lr={self.config.lr:g}, teacher_lr={self.config.teacher_lr:g}). Nothing of "
                    "this experience was kept or saved; lower the learning rates (lr, teacher_lr) and run it again."
                ) from error
            raise

    def make_train_dataloader(
        self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False, drop_last=False, **kwargs
    ) -> None:
        """As Avalanche's, but in self-distillation each item carries its index (recorded teacher logits),
        and under torchrun each rank loads its shard (the same permutation on every rank)."""
        if not self.config.self_distillation and not is_distributed():
            return super().make_train_dataloader(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                                                 persistent_workers=persistent_workers, drop_last=drop_last, **kwargs)
        dataset = IndexedDataset(self.adapted_dataset) if self.config.self_distillation else self.adapted_dataset
        sampler = shard_sampler(dataset, shuffle, seed=self.seed)
        self.dataloader = DataLoader(
            dataset, batch_size=self.train_mb_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=num_workers, pin_memory=bool(pin_memory),
            persistent_workers=persistent_workers and num_workers > 0, drop_last=drop_last,
        )

    def make_eval_dataloader(self, **kwargs) -> None:
        """As Avalanche's, but under torchrun every rank evaluates all the data: identical results on every rank."""
        super().make_eval_dataloader(**kwargs)
        if is_distributed():
            self.dataloader = DataLoader(self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False)

    def _before_training_epoch(self, **kwargs) -> None:
        set_epoch(self.dataloader, self.config.teacher_epochs + self.clock.train_exp_epochs)
        super()._before_training_epoch(**kwargs)

    def _after_backward(self, **kwargs) -> None:
        average_gradients(self.model.parameters())  # before the gating guard zeroes the frozen gradients
        super()._after_backward(**kwargs)

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
            raise TrainingDivergedError(
                f"training diverged: the loss became NaN or infinite in experience "
                f"{self.experience.current_experience} (MIND task {self.current_task}), distillation phase, "
                f"epoch {self.clock.train_exp_epochs + 1} of {self.train_epochs}. Nothing of this "
                "experience was kept or saved; lower the learning rates (lr, teacher_lr) or beta and run it again."
            )
        if self.scheduler is not None:
            self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    # ----------------------------------------------------------- inference
    def eval(self, exp_list, **kwargs):
        """Avalanche's ``eval``, leaving the random state training continues from untouched
        (see :mod:`avalanche_mind.io.random_state`)."""
        with training_rng_kept(self):
            return super().eval(exp_list, **kwargs)

    def _before_eval(self, **kwargs) -> None:
        # Masked weights and BatchNorm state per sub-network: built once per eval.
        self._bank = None
        if self.state.n_tasks > 0:
            self._bank = SubnetworkBank(
                self.model, self.ownership, self.state.bn_snapshots, self.state.n_tasks, self.config.weight_sharing
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
        """``network(x)``, checking once per strategy that the output comes from the classifier."""
        if self._classifier_checked:
            return network(x)
        out = forward_from_classifier(network, x, self.ownership.classifier_name)
        self._classifier_checked = True
        return out

    def forward(self) -> Tensor:
        if self.is_training or self._bank is None:
            self.last_prediction = None
            return self.checked_forward(self.model, self.mb_x)
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
