"""Score statistics gathered from training data as it streams by, once an experience is trained.

After experience t is trained (and its BatchNorm snapshot stored), its training
inputs go once, without gradient, through sub-network t (own and rotated
statistics) and through every earlier sub-network (foreign statistics for them).
Only sums of score pairs are kept, never an image: the method stays exemplar-free.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.state import MINDState
from avalanche_mind.inference.bank import SubnetworkBank
from avalanche_mind.task_id.statistics import ScoreStatistics, rotations


def collect_statistics(
    statistics: ScoreStatistics,
    run: Callable[[Tensor, int], Tuple[Tensor, Tensor]],
    slices: Sequence[Tensor],
    task: int,
    batches: Callable[[], Iterable[Tuple[Tensor, Tensor]]],
) -> None:
    """After ``task`` is trained: its feature model, its own and rotated statistics, and
    foreign statistics of every earlier task.

    ``run(x, t)``: penultimate features and full-width logits of sub-network ``t``
    (with its BatchNorm snapshot); ``batches()``: a fresh pass over ``task``'s training
    data ``(x, y)``, without augmentation (two passes are made). Nothing is kept but
    the sums, the class means and the precision.
    """
    while statistics.n_tasks <= task:
        statistics.add_task()
    slice_ = slices[task]
    position = torch.full((int(slice_.max()) + 1,), -1, dtype=torch.long)
    position[slice_.cpu()] = torch.arange(len(slice_))
    features, positions = [], []
    for x, y in batches():
        features.append(run(x, task)[0].cpu())
        positions.append(position[y.cpu()])
    statistics.fit_features(task, torch.cat(features), torch.cat(positions), len(slice_))
    for x, _ in batches():
        f, logits = run(x, task)
        statistics.update(task, "own", statistics.scores(task, logits[:, slice_], f))
        if x.dim() == 4 and x.shape[-1] == x.shape[-2]:
            f, logits = run(rotations(x), task)
            statistics.update(task, "rotated", statistics.scores(task, logits[:, slice_], f))
        for earlier in range(task):
            f, logits = run(x, earlier)
            scores = statistics.scores(earlier, logits[:, slices[earlier]], f)
            statistics.update(earlier, "foreign", scores)
            statistics.update(earlier, "foreign_white", statistics.whiten(earlier, scores))


def gather_statistics(
    statistics: ScoreStatistics,
    model: torch.nn.Module,
    run: Callable[[Tensor, int], Tuple[Tensor, Tensor]],
    slices: Sequence[Tensor],
    task: int,
    dataset,
    batch_size: int,
    device,
) -> None:
    """:func:`collect_statistics` over ``dataset`` (un-augmented) with ``model`` in eval mode, restored after."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)

    def batches():
        return ((mb[0].to(device), mb[1]) for mb in loader)

    was_training = model.training
    model.eval()
    try:
        collect_statistics(statistics, run, slices, task, batches)
    finally:
        model.train(was_training)




def gather_task_statistics(
    model: nn.Module, ownership: OwnershipMap, state: MINDState, weight_sharing: bool,
    slices: List[Tensor], dataset, batch_size: int, device: torch.device,
) -> None:
    """Pass the last trained task's ``dataset`` through every sub-network; add its scores to ``state``."""
    bank = SubnetworkBank(model, ownership, state.bn_snapshots, state.n_tasks, weight_sharing)
    gather_statistics(state.score_statistics, model, bank.features_and_logits, slices, state.n_tasks - 1,
                      dataset, batch_size, device)


__all__ = ["collect_statistics", "gather_statistics", "gather_task_statistics"]
