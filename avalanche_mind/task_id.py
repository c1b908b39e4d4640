"""Task identification: which sub-network a test input belongs to (the TAg choice).

Every rule looks at each sub-network's logits on its own output slice and picks,
per input, the task with the highest score:

- ``"max_confidence"`` (the paper's): max of ``softmax(logits / temperature)``;
- ``"entropy"``: among the two most confident tasks, the one with lower
  normalised entropy (the paper's documented alternative);
- ``"max_logit"``, ``"energy"`` (``temperature * logsumexp(logits / temperature)``):
  cheap scores from the OOD literature, for the ablation;
- ``"zscore"``: the max log-softmax standardised by its mean and spread on the
  task's *own* training inputs, so that a small, unsure sub-network and a large,
  confident one are compared on the same scale (per-task calibration);
- ``"likelihood_ratio"``: a Gaussian likelihood ratio of the score pair (max
  logit, logsumexp) under the task's own training inputs against *foreign*
  inputs: the training inputs of every later experience, run through the
  sub-network as they stream by (no image is kept), pooled with the task's own
  inputs rotated by 90/180/270 degrees (so the newest task, which no later
  experience has visited yet, has foreign statistics too).

The statistics rules need :class:`ScoreStatistics`, built from training data only
(never the test stream) and stored in ``MINDState`` (hence in checkpoints and the
``Predictor``); they do not depend on the temperature.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

TASK_INFERENCE_RULES = ("max_confidence", "entropy", "max_logit", "energy", "zscore", "likelihood_ratio")
STATISTICS_RULES = frozenset({"zscore", "likelihood_ratio"})

N_FEATURES = 2
"""Score pair per (input, sub-network): max logit and logsumexp of the output slice."""
_RIDGE = 1e-3
"""Added to covariance diagonals (relative to their scale) so a degenerate score pair stays invertible."""
KINDS = ("own", "rotated", "foreign")
"""Which inputs a statistic summarises: the task's own, its own rotated, later experiences'."""


def check_rule(rule: str) -> None:
    if rule not in TASK_INFERENCE_RULES:
        raise ValueError(f"unknown task_inference {rule!r}; use one of {list(TASK_INFERENCE_RULES)}")


def score_pair(slice_logits: Tensor) -> Tensor:
    """``B x 2``: (max logit, logsumexp) of one sub-network's output slice."""
    return torch.stack([slice_logits.max(dim=1).values, torch.logsumexp(slice_logits, dim=1)], dim=1)


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

    Stored as three tensors per kind (count ``T``, sum ``T x 2``, sum of outer
    products ``T x 2 x 2``, float64) so they save and stack like the BatchNorm
    snapshots: 21 floats per task and kind.
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
            for name, shape in (("count", ()), ("sum", (N_FEATURES,)), ("outer", (N_FEATURES, N_FEATURES))):
                key = f"{kind}.{name}"
                row = torch.zeros((1, *shape), dtype=torch.float64)
                self.sums[key] = row if key not in self.sums else torch.cat([self.sums[key], row])

    @torch.no_grad()
    def update(self, task: int, kind: str, pairs: Tensor) -> None:
        pairs = pairs.detach().to(device="cpu", dtype=torch.float64)
        self.sums[f"{kind}.count"][task] += len(pairs)
        self.sums[f"{kind}.sum"][task] += pairs.sum(0)
        self.sums[f"{kind}.outer"][task] += pairs.T @ pairs

    def state_dict(self) -> Dict[str, Tensor]:
        return {k: v.clone() for k, v in self.sums.items()}

    def complete(self, n_tasks: int) -> bool:
        """Whether every task ``< n_tasks`` has statistics of its own inputs."""
        return self.n_tasks >= n_tasks and bool((self.sums["own.count"][:n_tasks] > 1).all())

    def gaussian(self, kind: str, n_tasks: int):
        """Mean ``T x 2`` and covariance ``T x 2 x 2`` of ``kind`` for the first ``n_tasks`` tasks."""
        count = self.sums[f"{kind}.count"][:n_tasks].clamp_min(1.0)
        mean = self.sums[f"{kind}.sum"][:n_tasks] / count[:, None]
        cov = self.sums[f"{kind}.outer"][:n_tasks] / count[:, None, None] - mean[:, :, None] * mean[:, None, :]
        scale = cov.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-6)
        cov = cov + (_RIDGE * scale)[:, None, None] * torch.eye(N_FEATURES, dtype=cov.dtype)
        return mean, cov

    def foreign_gaussian(self, n_tasks: int):
        """Foreign inputs of each task: later experiences' and its own rotated ones, pooled."""
        keys = ("count", "sum", "outer")
        pooled = {k: self.sums[f"foreign.{k}"][:n_tasks] + self.sums[f"rotated.{k}"][:n_tasks] for k in keys}
        merged = ScoreStatistics()
        merged.sums = {f"foreign.{k}": v for k, v in pooled.items()}
        return merged.gaussian("foreign", n_tasks)


def _gaussian_log_density(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``x``: B x T x 2; mean T x 2; cov T x 2 x 2 -> B x T."""
    diff = x - mean[None]
    precision = torch.linalg.inv(cov)
    mahalanobis = torch.einsum("bti,tij,btj->bt", diff, precision, diff)
    return -0.5 * (mahalanobis + torch.logdet(cov)[None] + N_FEATURES * math.log(2 * math.pi))


def task_scores(
    slice_logits: Sequence[Tensor], temperature: float, rule: str, statistics: Optional[ScoreStatistics] = None
) -> Tensor:
    """``B x T`` scores of every task for every input; the chosen task is their argmax.

    Not defined for ``"entropy"``, which is a choice between two tasks, not a score.
    """
    n_tasks = len(slice_logits)
    if rule == "max_confidence":
        return torch.stack([F.softmax(l / temperature, dim=1).max(dim=1).values for l in slice_logits], dim=1)
    if rule == "max_logit":
        return torch.stack([l.max(dim=1).values for l in slice_logits], dim=1)
    if rule == "energy":
        return torch.stack([temperature * torch.logsumexp(l / temperature, dim=1) for l in slice_logits], dim=1)
    if rule not in STATISTICS_RULES:
        raise ValueError(f"rule {rule!r} has no per-task score; use one of {sorted(TASK_INFERENCE_RULES)}")
    if statistics is None or not statistics.complete(n_tasks):
        raise ValueError(
            f"task_inference={rule!r} needs score statistics of every trained task; they are "
            "collected after each experience's training (a checkpoint saved by an older version, "
            "or a periodic evaluation during training, has none): use 'max_confidence' there"
        )
    pairs = torch.stack([score_pair(l) for l in slice_logits], dim=1).to(torch.float64)  # B x T x 2
    mean, cov = statistics.gaussian("own", n_tasks)
    mean, cov = mean.to(pairs.device), cov.to(pairs.device)
    if rule == "zscore":
        # log max softmax = max logit - logsumexp: a linear function of the pair.
        direction = torch.tensor([1.0, -1.0], dtype=torch.float64, device=pairs.device)
        centre = mean @ direction
        spread = torch.einsum("i,tij,j->t", direction, cov, direction).clamp_min(1e-12).sqrt()
        return ((pairs @ direction - centre[None]) / spread[None]).float()
    f_mean, f_cov = statistics.foreign_gaussian(n_tasks)
    own = _gaussian_log_density(pairs, mean, cov)
    foreign = _gaussian_log_density(pairs, f_mean.to(pairs.device), f_cov.to(pairs.device))
    return (own - foreign).float()


@torch.no_grad()
def collect_statistics(
    statistics: ScoreStatistics,
    logits_of: Callable[[Tensor, int], Tensor],
    slices: Sequence[Tensor],
    task: int,
    batches: Iterable[Tensor],
) -> None:
    """After ``task`` is trained: its own and rotated statistics, and foreign ones of every earlier task.

    ``logits_of(x, t)``: full-width logits of sub-network ``t`` (with its BatchNorm
    snapshot); ``batches``: the inputs of ``task``'s training data, without
    augmentation. Nothing is kept but the sums.
    """
    while statistics.n_tasks <= task:
        statistics.add_task()
    for x in batches:
        statistics.update(task, "own", score_pair(logits_of(x, task)[:, slices[task]]))
        if x.dim() == 4 and x.shape[-1] == x.shape[-2]:
            statistics.update(task, "rotated", score_pair(logits_of(rotations(x), task)[:, slices[task]]))
        for earlier in range(task):
            statistics.update(earlier, "foreign", score_pair(logits_of(x, earlier)[:, slices[earlier]]))


def choose_task(
    slice_logits: Sequence[Tensor],
    temperature: float,
    rule: str,
    statistics: Optional[ScoreStatistics] = None,
) -> Tensor:
    """Index of the chosen task for each input (``rule``: one of ``TASK_INFERENCE_RULES``)."""
    check_rule(rule)
    if rule != "entropy" or len(slice_logits) < 2:
        if rule == "entropy":
            rule = "max_confidence"
        return task_scores(slice_logits, temperature, rule, statistics).argmax(dim=1)
    probs = [F.softmax(l / temperature, dim=1) for l in slice_logits]
    confidence = torch.stack([p.max(dim=1).values for p in probs], dim=1)  # B x T
    entropy = torch.stack(
        [-(p * p.clamp_min(1e-12).log()).sum(1) / math.log(max(p.shape[1], 2)) for p in probs], dim=1
    )
    top2 = confidence.topk(2, dim=1).indices
    first, second = top2[:, 0], top2[:, 1]
    e_first = entropy.gather(1, first[:, None])[:, 0]
    e_second = entropy.gather(1, second[:, None])[:, 0]
    return torch.where(e_second < e_first, second, first)
