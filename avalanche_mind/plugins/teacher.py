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
from typing import TYPE_CHECKING, Callable, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader

from avalanche_mind.core.distributed import average_batchnorm_statistics, average_gradients, set_epoch
from avalanche_mind.errors import TrainingDivergedError
from avalanche_mind.core.layers import FREE, reinitialise
from avalanche_mind.plugins.gating import guard_for, guarded_step
from avalanche_mind.logging.progress import progress_bar

if TYPE_CHECKING:
    from avalanche_mind.core.strategy import MIND

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
    def train(self, strategy: "MIND", slice_: Tensor) -> None:
        """Learn the current experience alone on its output slice ``slice_``, from the strategy's data loader."""
        if self.self_distillation:
            self._train_in_place(strategy, slice_)
        else:
            self.teacher = self._fresh_teacher(strategy)
            self._train(strategy, self.teacher, slice_, guard=None)
            average_batchnorm_statistics(self.teacher)
            # From here on the teacher only answers: drop its gradients (a model's worth).
            self.teacher.eval().requires_grad_(False)
            self.teacher.zero_grad(set_to_none=True)

    def release(self) -> None:
        """Free the teacher's memory once its experience is learned (or abandoned)."""
        self.teacher = None
        self.recorded_logits = None

    def after_training_exp(self, strategy: "MIND", **kwargs) -> None:
        self.release()

    def _fresh_teacher(self, strategy: "MIND") -> nn.Module:
        teacher = copy.deepcopy(strategy.model)
        for module in teacher.modules():
            if hasattr(module, "mask") and hasattr(module, "owner"):
                module.mask = torch.ones((), device=module.weight.device)
        reinitialise(teacher, strategy.generator)
        return teacher.train()

    def _train_in_place(self, strategy: "MIND", slice_: Tensor) -> None:
        ownership, task = strategy.ownership, strategy.current_task
        if not strategy.zero_start:  # zero start: FREE weights stay at zero, the teacher starts as sub-network t-1
            ownership.reinitialise_free(strategy.generator)
        ownership.activate_dense()
        guard = guard_for(
            strategy.model,
            ownership,
            owner=FREE,
            shared_trainable=task == 0,
            batchnorm_trainable=True,
        )
        self._train(strategy, strategy.model, slice_, guard)
        average_batchnorm_statistics(strategy.model)
        self.recorded_logits = self._record(strategy, slice_)
        strategy.model.train()

    def _train(self, strategy: "MIND", teacher: nn.Module, slice_: Tensor, guard) -> None:
        optimizer = self.optimizer_factory([p for p in teacher.parameters() if p.requires_grad])
        scheduler = MultiStepLR(optimizer, milestones=self.milestones, gamma=self.gamma)
        targets_of = strategy.slice_position(strategy.current_task)
        teacher.train()
        self.losses = []
        bar = progress_bar(strategy, self.epochs, f"teacher exp {strategy.current_task}")
        for epoch in range(self.epochs):
            set_epoch(strategy.dataloader, epoch)
            total, count = 0.0, 0
            for mbatch in strategy.dataloader:
                x = mbatch[0].to(strategy.device, non_blocking=True)
                y = targets_of[mbatch[1].to(strategy.device)]
                loss = (F.cross_entropy(strategy.checked_forward(teacher, x)[:, slice_], y)
                        + strategy.rejection_loss(teacher, x, y, slice_))
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
                    f"{strategy.experience.current_experience} (MIND task {strategy.current_task}), teacher "
                    f"phase, epoch {len(self.losses)} of {self.epochs}. Nothing of this experience was kept "
                    "or saved; lower the learning rates (teacher_lr, lr) and run it again."
                )
            bar.update(loss=self.losses[-1], lr=lr)
        bar.close()

    @torch.no_grad()
    def _record(self, strategy: "MIND", slice_: Tensor) -> Tensor:
        """Teacher logits (output slice only) for every training sample, by index."""
        strategy.model.eval()
        dataset = IndexedDataset(strategy.experience.dataset.eval())
        loader = DataLoader(dataset, batch_size=strategy.eval_mb_size, shuffle=False)
        chunks = [strategy.model(mb[0].to(strategy.device))[:, slice_] for mb in loader]
        return torch.cat(chunks)

    # ---------------------------------------------------------- distillation
    @torch.no_grad()
    def logits(self, x: Tensor, index: Tensor, slice_: Tensor) -> Tensor:
        """Teacher logits on ``slice_`` for the minibatch ``x`` (``index``: its samples' dataset indices)."""
        if self.self_distillation:
            return self.recorded_logits[index.to(self.recorded_logits.device)]
        return self.teacher(x)[:, slice_]
