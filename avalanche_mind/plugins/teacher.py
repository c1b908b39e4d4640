"""Teacher training: learn experience t alone, so the student can distil it.

Default (the paper's MIND): a fresh, randomly initialised copy of the model's
architecture is trained on the experience's output slice and kept (in eval mode)
for the distillation phase. Self-distillation: the teacher is the main model
itself, trained in place on its FREE weights (earlier experiences' weights are
used but frozen); its logits on the training inputs are recorded once, so no
second network is held during distillation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from avalanche_mind.core.distributed import average_batchnorm_statistics, average_gradients, set_epoch
from avalanche_mind.core.layers import FREE, reinitialise
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.errors import TrainingDivergedError
from avalanche_mind.logging.progress import progress_bar
from avalanche_mind.plugins.gating import guard_for, guarded_step

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]


class IndexedDataset(torch.utils.data.Dataset):
    """Yields ``(x, y, index, task)``: the index finds a sample's recorded teacher logits."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        return (item[0], item[1], index, item[-1])


@dataclass
class TeacherContext:
    """What the teacher phase needs from MIND for one experience, and nothing more."""

    model: nn.Module
    """The (gated) model: copied for a fresh teacher, trained in place in self-distillation."""
    ownership: OwnershipMap
    task: int
    """MIND's id of the experience (its sub-network)."""
    experience_id: int
    """The stream's id of the experience, for messages."""
    slice_: Tensor
    """The experience's class ids (its output slice)."""
    positions: Tensor
    """Class id -> position inside ``slice_``."""
    loader: Any
    """The experience's training data loader (as prepared by the strategy)."""
    dataset: Any
    """The experience's training data without augmentation (self-distillation records logits on it)."""
    batch_size: int
    device: torch.device
    generator: torch.Generator
    zero_start: bool
    """Whether the new weights start at zero (self-distillation: the teacher starts as sub-network t-1)."""
    forward: Callable[[nn.Module, Tensor], Tensor]
    """``network(x)``, checking that the output comes from the classifier."""
    extra_loss: Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]
    """The train-time rejection terms ``(network, x, positions of y, slice) -> loss`` (negatives, rotation)."""
    verbose: bool = False


class TeacherPlugin(SupervisedPlugin, supports_distributed=True):
    """The teacher phase: MIND calls :meth:`train` first for each experience, :meth:`logits` per minibatch."""

    def __init__(
        self,
        epochs: int,
        optimizer_factory: OptimizerFactory,
        milestones: Sequence[int],
        gamma: float,
        self_distillation: bool,
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.optimizer_factory = optimizer_factory
        self.milestones = list(milestones)
        self.gamma = gamma
        self.self_distillation = self_distillation
        self.teacher: Optional[nn.Module] = None
        self.recorded_logits: Optional[Tensor] = None
        self.losses: List[float] = []  # mean loss per teacher epoch, for loggers

    # ------------------------------------------------------------------ phase
    def train(self, context: TeacherContext) -> None:
        """Learn the experience alone on its output slice, from its training data loader."""
        if self.self_distillation:
            self._train_in_place(context)
        else:
            self.teacher = self._fresh_teacher(context)
            self._train(context, self.teacher, guard=None)
            average_batchnorm_statistics(self.teacher)
            # From here on the teacher only answers: drop its gradients (a model's worth).
            self.teacher.eval().requires_grad_(False)
            self.teacher.zero_grad(set_to_none=True)

    def release(self) -> None:
        """Free the teacher's memory once its experience is learned (or abandoned)."""
        self.teacher = None
        self.recorded_logits = None

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.release()

    def _fresh_teacher(self, context: TeacherContext) -> nn.Module:
        teacher = copy.deepcopy(context.model)
        for module in teacher.modules():
            if hasattr(module, "mask") and hasattr(module, "owner"):
                module.mask = torch.ones((), device=module.weight.device)
        reinitialise(teacher, context.generator)
        return teacher.train()

    def _train_in_place(self, context: TeacherContext) -> None:
        ownership = context.ownership
        if not context.zero_start:  # zero start: FREE weights stay at zero, the teacher starts as sub-network t-1
            ownership.reinitialise_free(context.generator)
        ownership.activate_dense()
        guard = guard_for(context.model, ownership, owner=FREE, per_experience_trainable=True)
        self._train(context, context.model, guard)
        average_batchnorm_statistics(context.model)
        self.recorded_logits = self._record(context)
        context.model.train()

    def _train(self, context: TeacherContext, teacher: nn.Module, guard) -> None:
        optimizer = self.optimizer_factory([p for p in teacher.parameters() if p.requires_grad])
        scheduler = MultiStepLR(optimizer, milestones=self.milestones, gamma=self.gamma)
        slice_, targets_of = context.slice_, context.positions
        teacher.train()
        self.losses = []
        bar = progress_bar(context, self.epochs, f"teacher exp {context.task}")
        for epoch in range(self.epochs):
            set_epoch(context.loader, epoch)
            total, count = 0.0, 0
            for mbatch in context.loader:
                x = mbatch[0].to(context.device, non_blocking=True)
                y = targets_of[mbatch[1].to(context.device)]
                loss = (F.cross_entropy(context.forward(teacher, x)[:, slice_], y)
                        + context.extra_loss(teacher, x, y, slice_))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(teacher.parameters())  # under torchrun; before the guard
                guarded_step(optimizer, guard)
                total += float(loss.detach()) * len(y)
                count += len(y)
            lr = optimizer.param_groups[0]["lr"]  # the rate this epoch used, before the scheduler steps
            scheduler.step()
            self.losses.append(total / max(count, 1))
            if not math.isfinite(self.losses[-1]):
                bar.close()
                raise TrainingDivergedError(
                    f"training diverged: the loss became NaN or infinite in experience "
                    f"{context.experience_id} (MIND task {context.task}), teacher "
                    f"phase, epoch {len(self.losses)} of {self.epochs}. Nothing of this experience was kept "
                    "or saved; lower the learning rates (teacher_lr, lr) and run it again."
                )
            bar.update(loss=self.losses[-1], lr=lr)
        bar.close()

    @torch.no_grad()
    def _record(self, context: TeacherContext) -> Tensor:
        """Teacher logits (output slice only) for every training sample, by index."""
        context.model.eval()
        loader = DataLoader(IndexedDataset(context.dataset), batch_size=context.batch_size, shuffle=False)
        chunks = [context.model(mb[0].to(context.device))[:, context.slice_] for mb in loader]
        return torch.cat(chunks)

    # ---------------------------------------------------------- distillation
    @torch.no_grad()
    def logits(self, x: Tensor, index: Tensor, slice_: Tensor) -> Tensor:
        """Teacher logits on ``slice_`` for the minibatch ``x`` (``index``: its samples' dataset indices)."""
        if self.self_distillation:
            return self.recorded_logits[index.to(self.recorded_logits.device)]
        return self.teacher(x)[:, slice_]
