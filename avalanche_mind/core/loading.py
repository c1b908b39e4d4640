"""MIND's data loaders and per-step hooks for self-distillation and data-parallel training (torchrun).

A mixin of :class:`~avalanche_mind.core.strategy.MIND` (before Avalanche's template
in its bases), so that the strategy module holds the procedure and this one how the
data reaches it: in self-distillation each item carries its index (to find its
recorded teacher logits), and under torchrun each rank loads its shard and the
gradients are averaged (see :mod:`avalanche_mind.core.distributed`).
"""
from __future__ import annotations

from torch.utils.data import DataLoader

from avalanche_mind.core.distributed import average_gradients, is_distributed, set_epoch, shard_sampler
from avalanche_mind.plugins.teacher import IndexedDataset


class DataParallelLoading:
    """Overrides of Avalanche's template hooks; uses ``config``, ``seed`` and the template's attributes."""

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


__all__ = ["DataParallelLoading"]
