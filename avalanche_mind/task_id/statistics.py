"""Score statistics of each sub-network on training inputs: what the statistics rules of task choice need.

Per task and per kind of input (its own, its own rotated, later experiences'), running
sums of a 3-value score vector, plus the class means and shared precision of the
task's own penultimate features. Built from training data only (never the test
stream), stored in ``MINDState`` (hence in checkpoints and the ``Predictor``).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

N_FEATURES = 3
"""Score vector per (input, sub-network): max logit and logsumexp of the output slice, and minus the
Mahalanobis distance of its penultimate features to the nearest class mean of the task's own inputs."""
_RIDGE = 1e-3
"""Added to covariance diagonals (relative to each variance) so a degenerate score vector stays invertible."""
SHRINKAGE = 0.1
"""Feature covariance shrunk towards its mean variance by this fraction (a few thousand inputs, 64+ dims)."""
KINDS = ("own", "rotated", "foreign", "foreign_white")
"""Which inputs a statistic summarises: the task's own, its own rotated, later experiences' (and
the same in the task's own whitened coordinates, for the ``shared_foreign`` rule)."""


def score_pair(slice_logits: Tensor) -> Tensor:
    """``B x 2``: (max logit, logsumexp) of one sub-network's output slice."""
    return torch.stack([slice_logits.max(dim=1).values, torch.logsumexp(slice_logits, dim=1)], dim=1)


def nearest_class_distance(features: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """``B``: Mahalanobis distance of each feature vector to the nearest of ``means`` (``C x F``)."""
    means, precision = means.to(features), precision.to(features)
    projected = features @ precision
    squared = (
        (projected * features).sum(1, keepdim=True)
        - 2 * projected @ means.T
        + ((means @ precision) * means).sum(1)[None]
    )
    return squared.min(dim=1).values.clamp_min(0).sqrt()


def rotations(x: Tensor) -> Tensor:
    """Each input turned by 90, 180 or 270 degrees (by its position in the batch; no RNG drawn).

    The surrogate foreign inputs of the rotation rejection and of the statistics:
    glyph- or image-like, but not what any task was trained on.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"rotation needs square images (N x C x H x H), got shape {tuple(x.shape)}; "
            "use rejection=None and a task_inference rule without statistics for other inputs"
        )
    out = torch.empty_like(x)
    for k in (1, 2, 3):
        out[k - 1::3] = torch.rot90(x[k - 1::3], k, dims=(2, 3))
    return out


def uniform_target_loss(slice_logits: Tensor) -> Tensor:
    """Cross-entropy against the uniform distribution: a sub-network unsure of a foreign input."""
    return -F.log_softmax(slice_logits, dim=1).mean()


class ScoreStatistics:
    """Running sums of the score pair, per task and per kind of input (``KINDS``).

    Stored as three tensors per kind (count ``T``, sum ``T x 3``, sum of outer
    products ``T x 3 x 3``, float64) so they save and stack like the BatchNorm
    snapshots: 13 floats per task and kind; plus, per task, the class means and
    shared precision of its own penultimate features (``features.<t>.means``,
    ``features.<t>.precision``: ``C x F`` and ``F x F``).
    """

    def __init__(self, state: Optional[Dict[str, Tensor]] = None) -> None:
        self.sums: Dict[str, Tensor] = {}
        if state:
            self.sums = {k: v.detach().to(torch.float64).cpu().clone() for k, v in state.items()}

    @property
    def n_tasks(self) -> int:
        return int(self.sums["own.count"].shape[0]) if self.sums else 0

    def add_task(self) -> None:
        """Room for one more task, with empty sums."""
        for kind in KINDS:
            for name, shape in zip(_SUMS, ((), (N_FEATURES,), (N_FEATURES, N_FEATURES))):
                key = f"{kind}.{name}"
                row = torch.zeros((1, *shape), dtype=torch.float64)
                self.sums[key] = row if key not in self.sums else torch.cat([self.sums[key], row])

    @torch.no_grad()
    def update(self, task: int, kind: str, pairs: Tensor) -> None:
        pairs = pairs.detach().to(device="cpu", dtype=torch.float64)
        self.sums[f"{kind}.count"][task] += len(pairs)
        self.sums[f"{kind}.sum"][task] += pairs.sum(0)
        self.sums[f"{kind}.outer"][task] += pairs.T @ pairs

    def scores(self, task: int, slice_logits: Tensor, features: Tensor) -> Tensor:
        """``B x 3`` score vectors of sub-network ``task`` (see ``N_FEATURES``)."""
        distance = nearest_class_distance(
            features, self.sums[f"features.{task}.means"], self.sums[f"features.{task}.precision"]
        )
        return torch.cat([score_pair(slice_logits), -distance[:, None].to(slice_logits.dtype)], dim=1)

    @torch.no_grad()
    def fit_features(self, task: int, features: Tensor, positions: Tensor, n_classes: int) -> None:
        """Class means and shared (shrunk) precision of ``task``'s own features; ``positions``: class per row."""
        features = features.detach().to(device="cpu", dtype=torch.float64)
        positions = positions.detach().cpu()
        present = torch.bincount(positions, minlength=n_classes) > 0
        sums = torch.zeros(n_classes, features.shape[1], dtype=torch.float64).index_add_(0, positions, features)
        counts = torch.bincount(positions, minlength=n_classes).to(torch.float64).clamp_min(1.0)
        means = sums / counts[:, None]
        centred = features - means[positions]
        cov = centred.T @ centred / max(len(features) - 1, 1)
        average = cov.diagonal().mean().clamp_min(1e-12)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * average * torch.eye(len(cov), dtype=cov.dtype)
        self.sums[f"features.{task}.means"] = means[present]
        self.sums[f"features.{task}.precision"] = torch.linalg.inv(cov)

    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.clone() for k, v in self.sums.items()}

    def complete(self, n_tasks: int) -> bool:
        """Whether every task ``< n_tasks`` has statistics of its own inputs."""
        return (
            self.n_tasks >= n_tasks
            and bool((self.sums["own.count"][:n_tasks] > 1).all())
            and all(f"features.{t}.precision" in self.sums for t in range(n_tasks))
        )

    def gaussian(self, kind: str, n_tasks: int):
        """Mean ``T x 3`` and covariance ``T x 3 x 3`` of ``kind`` for the first ``n_tasks`` tasks."""
        return _gaussian(*(self.sums[f"{kind}.{k}"][:n_tasks] for k in _SUMS))

    def whiten(self, task: int, pairs: Tensor) -> Tensor:
        """Score pairs in ``task``'s own whitened coordinates: ``L^-1 (u - mean)``, ``cov = L L^T``."""
        mean, cov = self.gaussian("own", task + 1)
        lower = torch.linalg.cholesky(cov[task])
        centred = (pairs.to(torch.float64) - mean[task].to(pairs.device)).T
        return torch.linalg.solve_triangular(lower.to(pairs.device), centred, upper=False).T

    def shared_foreign_gaussian(self, n_tasks: int):
        """One Gaussian of foreign inputs in whitened coordinates, pooled over the first ``n_tasks`` tasks."""
        mean, cov = _gaussian(*(self.sums[f"foreign_white.{k}"][:n_tasks].sum(0, keepdim=True) for k in _SUMS))
        return mean[0], cov[0]

    def foreign_gaussian(self, n_tasks: int):
        """Foreign inputs of each task: later experiences' and its own rotated ones, pooled."""
        return _gaussian(*(self.sums[f"foreign.{k}"][:n_tasks] + self.sums[f"rotated.{k}"][:n_tasks] for k in _SUMS))


_SUMS = ("count", "sum", "outer")


def _gaussian(count: Tensor, total: Tensor, outer: Tensor):
    """Mean and (ridged) covariance from running sums: count ``T``, sum ``T x D``, outer ``T x D x D``."""
    count = count.clamp_min(1.0)
    mean = total / count[:, None]
    cov = outer / count[:, None, None] - mean[:, :, None] * mean[:, None, :]
    variances = cov.diagonal(dim1=1, dim2=2).clamp_min(1e-9)
    return mean, cov + torch.diag_embed(_RIDGE * variances)


