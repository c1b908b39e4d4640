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

This module is the only implementation of the rules: evaluation, the ``Predictor``
and the exported graph all call :func:`choose_with` on constants from
:func:`rule_constants`. Everything that depends only on the statistics (Gaussians
from running sums, inverses, Cholesky factors) is computed there once, in the
precision the scores need (float32 for the feature distance, float64 for the
densities); what remains is arithmetic on the sub-networks' outputs that ONNX and
TorchScript can hold (max, logsumexp, softmax, matmul, top-2 and argmax).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from avalanche_mind.settings import TASK_INFERENCE_RULES, check_rule  # the names, torch-free, for the help texts
from avalanche_mind.task_id.statistics import N_FEATURES, ScoreStatistics

STATISTICS_RULES = frozenset({"zscore", "likelihood_ratio", "shared_foreign"})
"""The rules that need :class:`ScoreStatistics` and each sub-network's penultimate features."""

_LOG_2PI = N_FEATURES * math.log(2 * math.pi)
_ZSCORE_DIRECTIONS = ([1.0, -1.0, 0.0], [0.0, 0.0, 1.0])
"""zscore sums two standardised scores: log max softmax (max logit - logsumexp) and minus the feature distance."""


# ------------------------------------------------------------------ constants
def rule_constants(rule: str, statistics: Optional[ScoreStatistics], n_tasks: int,
                   device: Optional[torch.device] = None) -> Dict[str, Tensor]:
    """The constant tensors ``rule`` needs (empty for the rules on logits alone), on ``device``."""
    check_rule(rule)
    if rule not in STATISTICS_RULES:
        return {}
    if statistics is None or not statistics.complete(n_tasks):
        raise ValueError(
            f"task_inference={rule!r} needs score statistics of every trained task; they are "
            "collected after each experience's training (a checkpoint saved by an older version, "
            "or a periodic evaluation during training, has none): use 'max_confidence' there"
        )
    out: Dict[str, Tensor] = {}
    for t in range(n_tasks):
        means = statistics.sums[f"features.{t}.means"].float()
        precision = statistics.sums[f"features.{t}.precision"].float()
        out[f"means_{t}"] = means
        out[f"precision_{t}"] = precision
        out[f"mnorm_{t}"] = ((means @ precision) * means).sum(1)
    mean, cov = statistics.gaussian("own", n_tasks)
    if rule == "zscore":
        for i, direction in enumerate(_ZSCORE_DIRECTIONS):
            d = torch.tensor(direction, dtype=torch.float64)
            out[f"z_dir_{i}"] = d
            out[f"z_centre_{i}"] = mean @ d
            out[f"z_spread_{i}"] = torch.einsum("i,tij,j->t", d, cov, d).clamp_min(1e-12).sqrt()
    elif rule == "likelihood_ratio":
        f_mean, f_cov = statistics.foreign_gaussian(n_tasks)
        out.update(_density_constants("own", mean, cov))
        out.update(_density_constants("foreign", f_mean, f_cov))
    elif rule == "shared_foreign" and n_tasks >= 2:
        # whiten(t, u) = L_t^-1 (u - mean_t) with cov_t = L_t L_t^T: a fixed affine map per task.
        lower = torch.linalg.cholesky(cov)
        out["white_mean"] = mean
        out["white_inv_t"] = torch.linalg.inv(lower).transpose(1, 2).contiguous()
        f_mean, f_cov = statistics.shared_foreign_gaussian(n_tasks)
        eye = torch.eye(N_FEATURES, dtype=torch.float64)
        out.update(_density_constants("own", torch.zeros(n_tasks, N_FEATURES, dtype=torch.float64),
                                      eye.expand(n_tasks, -1, -1)))
        out.update(_density_constants("foreign", f_mean[None].expand(n_tasks, -1), f_cov[None].expand(n_tasks, -1, -1)))
    return {k: v.contiguous().to(device) if device is not None else v.contiguous() for k, v in out.items()}


def _density_constants(prefix: str, mean: Tensor, cov: Tensor) -> Dict[str, Tensor]:
    return {f"{prefix}_mean": mean.clone(), f"{prefix}_precision": torch.linalg.inv(cov),
            f"{prefix}_logdet": torch.logdet(cov)}


# ------------------------------------------------------------------ scores
def _log_density(x: Tensor, c: Dict[str, Tensor], prefix: str) -> Tensor:
    """``x``: B x T x D float64 -> B x T Gaussian log-densities."""
    diff = x - c[f"{prefix}_mean"][None]
    mahalanobis = (torch.matmul(diff.unsqueeze(-2), c[f"{prefix}_precision"][None]).squeeze(-2) * diff).sum(-1)
    return -0.5 * (mahalanobis + c[f"{prefix}_logdet"][None] + _LOG_2PI)


def _distance(features: Tensor, c: Dict[str, Tensor], t: int) -> Tensor:
    """Mahalanobis distance of each feature vector to the nearest class mean of task ``t``'s own inputs."""
    projected = features @ c[f"precision_{t}"]
    squared = (projected * features).sum(1, keepdim=True) - 2 * projected @ c[f"means_{t}"].T + c[f"mnorm_{t}"][None]
    return squared.min(dim=1).values.clamp_min(0).sqrt()


def scores_with(rule: str, temperature: float, slice_logits: List[Tensor], features: Optional[List[Tensor]],
                c: Dict[str, Tensor]) -> Tensor:
    """``B x T`` scores of every task for every input (``entropy``: its max_confidence pre-selection)."""
    if rule in ("max_confidence", "entropy"):
        return torch.stack([F.softmax(l / temperature, dim=1).max(dim=1).values for l in slice_logits], dim=1)
    if rule == "max_logit":
        return torch.stack([l.max(dim=1).values for l in slice_logits], dim=1)
    if rule == "energy":
        return torch.stack([temperature * torch.logsumexp(l / temperature, dim=1) for l in slice_logits], dim=1)
    n_tasks = len(slice_logits)
    if features is None or len(features) != n_tasks:
        raise ValueError(f"task_inference={rule!r} needs every sub-network's penultimate features")
    pairs = torch.stack([
        torch.cat([l.max(dim=1).values[:, None], torch.logsumexp(l, dim=1)[:, None],
                   -_distance(f, c, t)[:, None].to(l.dtype)], dim=1)
        for t, (l, f) in enumerate(zip(slice_logits, features))
    ], dim=1).to(torch.float64)  # B x T x 3
    if rule == "zscore":
        total = pairs[:, :, 0] * 0.0
        for i in range(len(_ZSCORE_DIRECTIONS)):
            total = total + (pairs @ c[f"z_dir_{i}"] - c[f"z_centre_{i}"][None]) / c[f"z_spread_{i}"][None]
        return total.float()
    if rule == "shared_foreign":
        if n_tasks < 2:
            return (pairs[:, :, 0] * 0.0).float()
        centred = pairs - c["white_mean"][None]
        white = torch.matmul(centred.unsqueeze(-2), c["white_inv_t"][None]).squeeze(-2)
        return (_log_density(white, c, "own") - _log_density(white, c, "foreign")).float()
    if rule == "likelihood_ratio":
        return (_log_density(pairs, c, "own") - _log_density(pairs, c, "foreign")).float()
    raise ValueError(f"unknown task_inference {rule!r}; use one of {list(TASK_INFERENCE_RULES)}")


def choose_with(rule: str, temperature: float, slice_logits: List[Tensor], features: Optional[List[Tensor]],
                c: Dict[str, Tensor]) -> Tensor:
    """Index of the chosen task per input, from ``rule``'s constants ``c`` (what the exported graph runs)."""
    if rule == "entropy" and len(slice_logits) >= 2:
        return entropy_choice(slice_logits, temperature)
    return scores_with(rule, temperature, slice_logits, features, c).argmax(dim=1)


# ------------------------------------------------------------------ from statistics
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
    if rule == "entropy":
        raise ValueError(f"rule {rule!r} has no per-task score; use one of {sorted(TASK_INFERENCE_RULES)}")
    return scores_with(rule, temperature, *_with_constants(rule, slice_logits, statistics, features))


def choose_task(
    slice_logits: Sequence[Tensor],
    temperature: float,
    rule: str,
    statistics: Optional[ScoreStatistics] = None,
    features: Optional[Sequence[Tensor]] = None,
) -> Tensor:
    """Index of the chosen task for each input (``rule``: one of ``TASK_INFERENCE_RULES``)."""
    return choose_with(rule, temperature, *_with_constants(rule, slice_logits, statistics, features))


def _with_constants(rule, slice_logits, statistics, features):
    """``(slice_logits, features, constants)`` as :func:`choose_with` and :func:`scores_with` take them."""
    constants = rule_constants(rule, statistics, len(slice_logits), slice_logits[0].device)
    return list(slice_logits), None if features is None else list(features), constants


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


__all__ = [
    "STATISTICS_RULES", "TASK_INFERENCE_RULES", "check_rule", "choose_task", "choose_with", "entropy_choice",
    "rule_constants", "scores_with", "task_scores",
]
