"""The task-choice rules of :mod:`avalanche_mind.task_id.rules`, as plain tensor code for an exported graph.

The Predictor computes each rule from the checkpoint's :class:`ScoreStatistics` on
every call (Gaussians from running sums, inverses, Cholesky factors). An artefact
must not depend on this package, so everything that depends only on the
statistics is computed once here, at export, in the Predictor's precision
(float32 for the feature distance, float64 for the score densities); what remains
is arithmetic on the sub-networks' outputs that ONNX and TorchScript can hold
(max, logsumexp, softmax, matmul, top-2 and argmax).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from avalanche_mind.task_id.rules import N_FEATURES, STATISTICS_RULES, TASK_INFERENCE_RULES, ScoreStatistics, entropy_choice

EXPORTABLE_RULES = TASK_INFERENCE_RULES
"""Every rule is exported; the ones in ``STATISTICS_RULES`` also need the classifier's input."""

_LOG_2PI = N_FEATURES * math.log(2 * math.pi)
_ZSCORE_DIRECTIONS = ([1.0, -1.0, 0.0], [0.0, 0.0, 1.0])


def rule_constants(rule: str, statistics: Optional[ScoreStatistics], n_tasks: int) -> Dict[str, Tensor]:
    """The constant tensors ``rule`` needs in the graph (empty for the rules on logits alone)."""
    if rule not in STATISTICS_RULES:
        return {}
    out: Dict[str, Tensor] = {}
    for t in range(n_tasks):
        # nearest_class_distance casts means and precision to the features' dtype (float32).
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
    return {k: v.contiguous() for k, v in out.items()}


def _density_constants(prefix: str, mean: Tensor, cov: Tensor) -> Dict[str, Tensor]:
    return {f"{prefix}_mean": mean.clone(), f"{prefix}_precision": torch.linalg.inv(cov),
            f"{prefix}_logdet": torch.logdet(cov)}


def _log_density(x: Tensor, c: Dict[str, Tensor], prefix: str) -> Tensor:
    """``x``: B x T x D float64 -> B x T Gaussian log-densities (task_id's, precision precomputed)."""
    diff = x - c[f"{prefix}_mean"][None]
    mahalanobis = (torch.matmul(diff.unsqueeze(-2), c[f"{prefix}_precision"][None]).squeeze(-2) * diff).sum(-1)
    return -0.5 * (mahalanobis + c[f"{prefix}_logdet"][None] + _LOG_2PI)


def _distance(features: Tensor, c: Dict[str, Tensor], t: int) -> Tensor:
    projected = features @ c[f"precision_{t}"]
    squared = (projected * features).sum(1, keepdim=True) - 2 * projected @ c[f"means_{t}"].T + c[f"mnorm_{t}"][None]
    return squared.min(dim=1).values.clamp_min(0).sqrt()


def choose_task(rule: str, temperature: float, slice_logits: List[Tensor], features: List[Tensor],
                c: Dict[str, Tensor]) -> Tensor:
    """Index of the chosen task per input, as :func:`avalanche_mind.task_id.rules.choose_task` computes it."""
    n_tasks = len(slice_logits)
    if rule == "entropy" and n_tasks >= 2:
        return entropy_choice(slice_logits, temperature)
    return scores(rule, temperature, slice_logits, features, c).argmax(dim=1)


def scores(rule: str, temperature: float, slice_logits: List[Tensor], features: List[Tensor],
           c: Dict[str, Tensor]) -> Tensor:
    """``B x T`` scores of :func:`avalanche_mind.task_id.rules.task_scores` (``entropy`` with one task: max_confidence)."""
    if rule in ("max_confidence", "entropy"):
        return torch.stack([F.softmax(l / temperature, dim=1).max(dim=1).values for l in slice_logits], dim=1)
    if rule == "max_logit":
        return torch.stack([l.max(dim=1).values for l in slice_logits], dim=1)
    if rule == "energy":
        return torch.stack([temperature * torch.logsumexp(l / temperature, dim=1) for l in slice_logits], dim=1)
    n_tasks = len(slice_logits)
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


__all__ = ["EXPORTABLE_RULES", "choose_task", "rule_constants", "scores"]
