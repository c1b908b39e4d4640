"""Task identification: which sub-network a test input belongs to (the TAg choice).

Every rule looks at each sub-network's logits on its own output slice and picks,
per input, the task with the highest score:

- ``"max_confidence"`` (the paper's): max of ``softmax(logits / temperature)``;
- ``"entropy"``: among the two most confident tasks, the one with lower
  normalised entropy (the paper's documented alternative);
- ``"max_logit"``, ``"energy"`` (``temperature * logsumexp(logits / temperature)``):
  cheap scores from the OOD literature, for the ablation;
- ``"zscore"``: the max log-softmax and the feature distance, each standardised
  by its mean and spread on the task's *own* training inputs, summed, so that a
  small, unsure sub-network and a large, confident one are compared on the same
  scale (per-task calibration);
- ``"shared_foreign"``: the same ratio in each task's own whitened coordinates
  (own inputs: mean 0, identity covariance), with *one* foreign Gaussian pooled
  over every (task, later experience) pair: the newest tasks, which no later
  experience has visited yet, borrow how foreign inputs look to the older ones;
- ``"likelihood_ratio"``: a Gaussian likelihood ratio of the score vector (max
  logit, logsumexp, and minus the Mahalanobis distance of the penultimate
  features to the nearest class mean of the task's own training inputs) under
  the task's own training inputs against *foreign*
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
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

TASK_INFERENCE_RULES = (
    "max_confidence", "entropy", "max_logit", "energy", "zscore", "likelihood_ratio", "shared_foreign",
)
STATISTICS_RULES = frozenset({"zscore", "likelihood_ratio", "shared_foreign"})

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


def check_rule(rule: str) -> None:
    if rule not in TASK_INFERENCE_RULES:
        raise ValueError(f"unknown task_inference {rule!r}; use one of {list(TASK_INFERENCE_RULES)}")


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


def _gaussian_log_density(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``x``: B x T x D; mean T x D; cov T x D x D -> B x T."""
    diff = x - mean[None]
    precision = torch.linalg.inv(cov)
    mahalanobis = torch.einsum("bti,tij,btj->bt", diff, precision, diff)
    return -0.5 * (mahalanobis + torch.logdet(cov)[None] + N_FEATURES * math.log(2 * math.pi))


def task_scores(
    slice_logits: Sequence[Tensor],
    temperature: float,
    rule: str,
    statistics: Optional[ScoreStatistics] = None,
    features: Optional[Sequence[Tensor]] = None,
) -> Tensor:
    """``B x T`` scores of every task for every input; the chosen task is their argmax.

    ``features``: each sub-network's penultimate features, needed by the statistics
    rules. Not defined for ``"entropy"``, which is a choice between two tasks, not a score.
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
    if features is None or len(features) != n_tasks:
        raise ValueError(f"task_inference={rule!r} needs every sub-network's penultimate features")
    pairs = torch.stack(
        [statistics.scores(t, l, f) for t, (l, f) in enumerate(zip(slice_logits, features))], dim=1
    ).to(torch.float64)  # B x T x 3
    if rule == "shared_foreign":
        if n_tasks < 2:
            return torch.zeros(pairs.shape[:2], device=pairs.device)
        white = torch.stack([statistics.whiten(t, pairs[:, t]) for t in range(n_tasks)], dim=1)
        f_mean, f_cov = statistics.shared_foreign_gaussian(n_tasks)
        own = _gaussian_log_density(white, torch.zeros_like(f_mean)[None].expand(n_tasks, -1),
                                    torch.eye(N_FEATURES, dtype=torch.float64).expand(n_tasks, -1, -1))
        foreign = _gaussian_log_density(white, f_mean.to(pairs.device)[None].expand(n_tasks, -1),
                                        f_cov.to(pairs.device)[None].expand(n_tasks, -1, -1))
        return (own - foreign).float()
    mean, cov = statistics.gaussian("own", n_tasks)
    mean, cov = mean.to(pairs.device), cov.to(pairs.device)
    if rule == "zscore":
        # log max softmax (= max logit - logsumexp) and minus the feature distance, each
        # standardised by the task's own inputs, summed.
        total = pairs.new_zeros(pairs.shape[:2])
        for direction in ([1.0, -1.0, 0.0], [0.0, 0.0, 1.0]):
            d = torch.tensor(direction, dtype=torch.float64, device=pairs.device)
            spread = torch.einsum("i,tij,j->t", d, cov, d).clamp_min(1e-12).sqrt()
            total += (pairs @ d - (mean @ d)[None]) / spread[None]
        return total.float()
    f_mean, f_cov = statistics.foreign_gaussian(n_tasks)
    own = _gaussian_log_density(pairs, mean, cov)
    foreign = _gaussian_log_density(pairs, f_mean.to(pairs.device), f_cov.to(pairs.device))
    return (own - foreign).float()


@torch.no_grad()
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


def choose_task(
    slice_logits: Sequence[Tensor],
    temperature: float,
    rule: str,
    statistics: Optional[ScoreStatistics] = None,
    features: Optional[Sequence[Tensor]] = None,
) -> Tensor:
    """Index of the chosen task for each input (``rule``: one of ``TASK_INFERENCE_RULES``)."""
    check_rule(rule)
    if rule != "entropy" or len(slice_logits) < 2:
        if rule == "entropy":
            rule = "max_confidence"
        return task_scores(slice_logits, temperature, rule, statistics, features).argmax(dim=1)
    return entropy_choice(slice_logits, temperature)


def entropy_choice(slice_logits: Sequence[Tensor], temperature: float) -> Tensor:
    """Of the two most confident sub-networks, the one whose slice distribution has the lower
    entropy (normalised by the slice width); needs two sub-networks or more."""
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
