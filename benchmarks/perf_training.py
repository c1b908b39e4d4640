"""Section ``training`` of ``benchmarks/perf.py``: MIND distillation step / plain KD step.

One distillation step of MIND (teacher forward + gated forward + backward +
gradient gating + AdamW step + restoring frozen weights) divided by one plain
knowledge-distillation step of the dense network (same teacher forward, same loss,
same optimiser), with the current ``WeightGuard`` and the one before issue 5.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind import OwnershipMap, gated_layers
from avalanche_mind.core.losses import js_divergence
from avalanche_mind.models.gresnet import ResNet
from avalanche_mind.plugins.gating import guard_for, guarded_step
from benchmarks.perf_common import median_ratio, model_with_tasks, rounds, table
from benchmarks.perf_reference import original_guard

N_TASKS, TASK = 10, 5
"""Task 5 of 10 is being distilled: 0..4 frozen, FREE weights frozen at zero."""
GUARD_CALLS = 20
"""Guard calls per timing of the guard alone (it is short)."""


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    slice_: Tensor
    lookup: Tensor
    """Class id -> position in ``slice_``."""


def model_at_task() -> Tuple[nn.Module, Tensor]:
    """The gated model while task ``TASK`` is distilled, and that task's classes."""
    model, ownership, _, slices = model_with_tasks(N_TASKS)
    for t in range(TASK + 1, N_TASKS):
        for layer in ownership.layers.values():
            layer.owner[layer.owner == t] = -1
    ownership.zero_free()
    ownership.activate(TASK, True)
    return model.train(), slices[TASK]


def gated_teacher(model: nn.Module) -> nn.Module:
    """MIND's teacher: a gated copy with every weight active."""
    teacher = copy.deepcopy(model)
    for _, layer in gated_layers(teacher):
        layer.mask = torch.ones(())
    return teacher.eval()


def random_batch(size: int, slice_: Tensor) -> Batch:
    lookup = torch.full((100,), -1, dtype=torch.long)
    lookup[slice_] = torch.arange(len(slice_))
    g = torch.Generator().manual_seed(2)
    x = torch.randn(size, 3, 32, 32, generator=g)
    y = slice_[torch.randint(len(slice_), (size,), generator=g)]
    return Batch(x, y, slice_, lookup)


def kd_steps(student, teacher, optimizer, guard, batch: Batch, steps: int) -> None:
    for _ in range(steps):
        with torch.no_grad():
            t_logits = teacher(batch.x)[:, batch.slice_]
        out = student(batch.x)[:, batch.slice_]
        loss = F.cross_entropy(out, batch.lookup[batch.y]) + 5.0 * js_divergence(t_logits, out)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        guarded_step(optimizer, guard)


def fresh_mind(model: nn.Module, reference: bool) -> Tuple[nn.Module, torch.optim.Optimizer, Any]:
    """A copy of ``model``, its AdamW and its guard (the one before issue 5 if ``reference``)."""
    m = copy.deepcopy(model)
    own = OwnershipMap(m, N_TASKS)
    own.activate(TASK, True)
    if reference:
        guard = original_guard(m, own, TASK)
    else:
        guard = guard_for(m, own, owner=TASK, per_experience_trainable=True)
    return m, adamw(m), guard


def adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=0.035, weight_decay=0.0)


def guard_only(guard, model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for _ in range(GUARD_CALLS):
        guard.zero_frozen_grads()
        guard.restore()


def forward_backward(net: nn.Module, batch: Batch, steps: int) -> None:
    for _ in range(steps):
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(batch.x)[:, batch.slice_], batch.lookup[batch.y]).backward()


def run_training(args) -> Dict[str, Any]:
    model, slice_ = model_at_task()
    teacher = gated_teacher(model)
    dense = ResNet(100).train()
    batch = random_batch(args.train_batch, slice_)
    m_new, opt_new, guard_new = fresh_mind(model, reference=False)
    m_old, opt_old, guard_old = fresh_mind(model, reference=True)
    steps = partial(kd_steps, batch=batch, steps=args.steps)
    times = rounds({
        # The same teacher module (MIND's: a gated copy, every weight active) in every variant.
        "plain KD step (dense)": partial(steps, dense, teacher, adamw(dense), None),
        "MIND step, WeightGuard before": partial(steps, m_old, teacher, opt_old, guard_old),
        "MIND step, WeightGuard after": partial(steps, m_new, teacher, opt_new, guard_new),
    }, args.repeats)
    guard_times = rounds({"before": partial(guard_only, guard_old, m_old),
                          "after": partial(guard_only, guard_new, m_new)}, args.repeats)
    # Gated vs dense forward+backward alone (no teacher, no optimiser).
    fb_times = rounds({"dense": partial(forward_backward, dense, batch, args.steps),
                       "gated": partial(forward_backward, m_new, batch, args.steps)}, args.repeats)
    base = times["plain KD step (dense)"]
    rows = [{"variant": name, "ratio": median_ratio(ts, base), "ms_per_step": 1000 * statistics.median(ts) / args.steps}
            for name, ts in times.items()]
    return {
        "batch": args.train_batch,
        "rows": rows,
        "guard_ms_per_step": {k: 1000 * statistics.median(v) / GUARD_CALLS for k, v in guard_times.items()},
        "gated_fwd_bwd_ratio": median_ratio(fb_times["gated"], fb_times["dense"]),
    }


def print_training(res) -> str:
    rows = [[r["variant"], r["ratio"], r["ms_per_step"]] for r in res["rows"]]
    out = table([f"step (batch {res['batch']})", "ratio (/ plain KD step)", "ms/step"], rows)
    g = res["guard_ms_per_step"]
    out += (f"\n\nWeightGuard alone (zero_frozen_grads + restore): before {g['before']:.2f} ms/step, "
            f"after {g['after']:.2f} ms/step; gated forward+backward / dense: {res['gated_fwd_bwd_ratio']:.3f}")
    return out
