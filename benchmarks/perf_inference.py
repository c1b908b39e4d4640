"""Section ``inference`` of ``benchmarks/perf.py``: TAg inference time / (T x plain dense forward).

T sub-networks classify N inputs; the time is divided by T plain forward passes of
the same dense network on the same inputs. Ways compared: the reference
implementation's (deep-copy the model for every task on every batch),
``SubnetworkBank`` in ``module`` mode (the code before issue 5), ``graph`` and
``batched`` modes, the shipped ``auto`` mode with the paper's and the default task
choice, and a dense pass optimised like ``graph``. Also checks that every way gives
the same TAg/TAw predictions.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from avalanche_mind.core.config import DEFAULTS
from avalanche_mind.inference.bank import SubnetworkBank, predict
from avalanche_mind.task_id import ScoreStatistics
from avalanche_mind.task_id.gather import collect_statistics
from benchmarks.perf_common import (
    dense_twin,
    median_ratio,
    model_with_tasks,
    rounds,
    table,
)
from benchmarks.perf_reference import DeepCopyBank

TEMPERATURE = DEFAULTS["temperature"]
"""MIND's default temperature of the task choice."""
REFERENCE = "deep-copy (reference)"
BEFORE = "module loop (before)"
SHIPPED = "auto (shipped)"
DEFAULT_RULE = "auto + shared_foreign (default rule)"
OPTIMISED_DENSE = "dense, optimised like graph"
SLOW_WAYS = (REFERENCE, "batched vmap")
"""Ways timed only up to ``--slow-max-tasks`` tasks (they cost minutes per round beyond)."""


def bank(model, ownership, snapshots, mode: str) -> SubnetworkBank:
    return SubnetworkBank(model, ownership, snapshots, len(snapshots), True, mode=mode)


def way_builders(model, ownership, snapshots, batched: bool) -> Dict[str, Callable[[], Any]]:
    builders: Dict[str, Callable[[], Any]] = {REFERENCE: lambda: DeepCopyBank(model, ownership, snapshots)}
    builders[BEFORE] = lambda: bank(model, ownership, snapshots, "module")
    builders["graph loop"] = lambda: bank(model, ownership, snapshots, "graph")
    if batched:
        builders["batched vmap"] = lambda: bank(model, ownership, snapshots, "batched")
    builders[SHIPPED] = lambda: bank(model, ownership, snapshots, "auto")
    return builders


def build_ways(builders: Dict[str, Callable[[], Any]]) -> Tuple[Dict[str, Any], Dict[str, float]]:
    """Each way built once, with its build time in milliseconds."""
    built, build_ms = {}, {}
    for name, build in builders.items():
        start = time.perf_counter()
        built[name] = build()
        build_ms[name] = 1000 * (time.perf_counter() - start)
    return built, build_ms


def is_timed(name: str, n_tasks: int, args) -> bool:
    return not (n_tasks > args.slow_max_tasks and name in SLOW_WAYS)


def agreement(built: Dict[str, Any], batches: Sequence[Tensor], slices: List[Tensor], n_tasks: int, args) -> Dict[str, Dict]:
    """Largest relative logit difference and same TAg/TAw predictions of each way, against ``module`` mode."""
    before = built[BEFORE]
    reference = [torch.stack(before.all_logits(b)) for b in batches]
    reference_tag = [predict(before, xb, slices, TEMPERATURE, "max_confidence").tag_class for xb in batches]
    agree = {}
    for name, b in built.items():
        if not is_timed(name, n_tasks, args):
            continue
        logits = [torch.stack(b.all_logits(xb)) for xb in batches]
        err = max(float((l - r).abs().max() / r.abs().max()) for l, r in zip(logits, reference))
        same_tag = all(
            torch.equal(predict(b, xb, slices, TEMPERATURE, "max_confidence").tag_class, ref)
            for xb, ref in zip(batches, reference_tag)
        )
        same_taw = all(
            torch.equal(l[t][:, slices[t]].argmax(1), r[t][:, slices[t]].argmax(1))
            for l, r in zip(logits, reference) for t in range(n_tasks)
        )
        agree[name] = {"max_rel_logit_err": err, "same_tag": same_tag, "same_taw": same_taw}
    return agree


def classify(b, batches: Sequence[Tensor], slices: List[Tensor]) -> Callable[[], Any]:
    return lambda: [predict(b, xb, slices, TEMPERATURE, "max_confidence") for xb in batches]


def default_rule_statistics(shipped: SubnetworkBank, slices: List[Tensor]) -> ScoreStatistics:
    """Each task's feature statistics, from random inputs, for the default ``shared_foreign`` rule."""
    stats = ScoreStatistics()
    g = torch.Generator().manual_seed(2)
    for task, s_ in enumerate(slices):
        data = [(torch.randn(64, 3, 32, 32, generator=g), s_[torch.arange(64) % len(s_)])]
        collect_statistics(stats, shipped.features_and_logits, slices, task, lambda: iter(data))
    return stats


def timed_variants(built, dense, batches, slices, n_tasks: int, args) -> Dict[str, Callable[[], Any]]:
    """What is timed, ``dense`` first: the denominator of every ratio."""
    variants: Dict[str, Callable[[], Any]] = {"dense": lambda: [dense(xb) for xb in batches]}
    variants.update({name: classify(b, batches, slices) for name, b in built.items() if is_timed(name, n_tasks, args)})
    # MIND's default task choice: the same passes, returning penultimate features too,
    # plus each task's feature distance and likelihood ratio.
    shipped = built[SHIPPED]
    stats = default_rule_statistics(shipped, slices)
    variants[DEFAULT_RULE] = lambda: [
        predict(shipped, xb, slices, TEMPERATURE, "shared_foreign", statistics=stats) for xb in batches
    ]
    # An equally optimised dense pass (BatchNorm folded, channels-last,
    # in-place ReLU): what "graph" would cost with no masks at all.
    full, full_own, full_snap, _ = model_with_tasks(1)
    opt_dense = SubnetworkBank(full, full_own, full_snap, 1, True, mode="graph")
    variants[OPTIMISED_DENSE] = lambda: [opt_dense.logits(xb, 0) for xb in batches]
    return variants


def result_rows(times, modes, build_ms, agree, n_tasks: int, args) -> List[Dict[str, Any]]:
    dense_s = statistics.median(times["dense"])
    rows = []
    for name in times:
        if name == "dense":
            continue
        tasks_here = 1 if name.startswith("dense") else n_tasks
        rows.append({
            "T": n_tasks,
            "N": args.n,
            "batch": args.batch,
            "way": name,
            "mode": modes.get(name, "-"),
            "ratio": median_ratio(times[name], times["dense"], tasks_here),
            "seconds": statistics.median(times[name]),
            "dense_seconds": dense_s,
            "build_ms": build_ms.get(name),
            **agree.get(name, {}),
        })
    return rows


@torch.no_grad()
def measure_tasks(n_tasks: int, args) -> List[Dict[str, Any]]:
    model, ownership, snapshots, slices = model_with_tasks(n_tasks)
    dense = dense_twin(model)
    x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batches = x.split(args.batch)
    built, build_ms = build_ways(way_builders(model, ownership, snapshots, not args.no_batched))
    modes = {k: getattr(b, "mode", "deep-copy") for k, b in built.items()}
    modes[DEFAULT_RULE] = built[SHIPPED].mode
    agree = agreement(built, batches, slices, n_tasks, args)
    times = rounds(timed_variants(built, dense, batches, slices, n_tasks, args), args.repeats)
    return result_rows(times, modes, build_ms, agree, n_tasks, args)


def run_inference(args) -> Dict[str, Any]:
    results = []
    for n_tasks in args.tasks:
        results += measure_tasks(n_tasks, args)
        print(f"  inference T={n_tasks}: done", file=sys.stderr, flush=True)
    return {"rows": results}


def print_inference(res) -> str:
    rows = [
        [r["T"], r["N"], r["way"], r["mode"], r["ratio"], 1000 * r["seconds"], 1000 * r["dense_seconds"],
         r.get("build_ms"), r.get("max_rel_logit_err"), r.get("same_tag"), r.get("same_taw")]
        for r in res["rows"]
    ]
    return table(
        ["T", "N", "way", "mode", "ratio (/ T dense)", "ms", "dense ms", "build ms", "max rel. logit err",
         "same TAg", "same TAw"],
        rows,
    )
