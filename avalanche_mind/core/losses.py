"""Distillation losses between the teacher's and the student's output slices, and the rejection loss.

All compare the two softmax distributions (the spec's Jensen-Shannon default and
its ablations), averaged over the minibatch.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind.core.snapshots import frozen_running_statistics
from avalanche_mind.settings import DISTILL_LOSS_NAMES, check_names
from avalanche_mind.task_id import rotations, uniform_target_loss

DistillLoss = Callable[[Tensor, Tensor], Tensor]


def js_divergence(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Jensen-Shannon divergence: symmetric and bounded, so beta stays meaningful."""
    log_p = F.log_softmax(teacher_logits, dim=1)
    log_q = F.log_softmax(student_logits, dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - torch.log(torch.tensor(2.0))
    kl_pm = F.kl_div(log_m, log_p, log_target=True, reduction="batchmean")
    kl_qm = F.kl_div(log_m, log_q, log_target=True, reduction="batchmean")
    return 0.5 * (kl_pm + kl_qm)


def kl_divergence(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """KL(teacher || student), the classic Hinton distillation term."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(teacher_logits, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def cosine_distance(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """One minus the cosine similarity of the two distributions."""
    p, q = F.softmax(teacher_logits, dim=1), F.softmax(student_logits, dim=1)
    return (1.0 - F.cosine_similarity(p, q, dim=1)).mean()


def l2_distance(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Squared Euclidean distance between the two distributions."""
    p, q = F.softmax(teacher_logits, dim=1), F.softmax(student_logits, dim=1)
    return (p - q).pow(2).sum(dim=1).mean()


def symmetric_kl(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """The authors' "JS": the mean of KL(p||q) and KL(q||p) on probabilities offset by 1e-4.

    About 4x a true Jensen-Shannon divergence for close distributions (a stronger
    effective beta); offered to run the paper as its code does.
    """
    p = F.softmax(teacher_logits, dim=1) + 1e-4
    q = F.softmax(student_logits, dim=1) + 1e-4
    log_p, log_q = p.log(), q.log()
    return 0.5 * ((p * (log_p - log_q)).sum(1) + (q * (log_q - log_p)).sum(1)).mean()


DISTILL_LOSSES: Dict[str, DistillLoss] = {
    "js": js_divergence,
    "symmetric_kl": symmetric_kl,
    "kl": kl_divergence,
    "cosine": cosine_distance,
    "l2": l2_distance,
}
check_names("core.losses.DISTILL_LOSSES", DISTILL_LOSSES, DISTILL_LOSS_NAMES)  # the help lists the settings' names


def rotation_rejection_loss(network: nn.Module, x: Tensor, slice_: Tensor) -> Tensor:
    """Cross-entropy to uniform of ``network``'s output slice on ``x`` rotated by 90/180/270 degrees.

    Train-time rejection (``rejection="rotation"``): rotated inputs stand in for
    other tasks' inputs. BatchNorm's running statistics are not updated by this
    pass, so the snapshot describes the task's own inputs only.
    """
    with frozen_running_statistics(network):
        logits = network(rotations(x))[:, slice_]
    return uniform_target_loss(logits)
