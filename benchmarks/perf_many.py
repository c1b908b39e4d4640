"""Section ``many`` of ``benchmarks/perf.py``: many experiences.

TAw/TAg accuracy on glyphs split into 10 and into 50 experiences, with the
``"equal"`` capacity and with a fraction of the FREE weights (small_cnn; the
README's table of many experiences comes from ``compare.py``).
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Dict, List, Tuple

import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.core.ownership import OwnershipMap
from benchmarks.perf_common import table

N_CLASSES = 100


def many_benchmark(n_exp: int, args) -> Tuple[Any, str]:
    """Glyphs in ``n_exp`` experiences, or the toy benchmark where glyphs are not available."""
    try:
        # Imported here: it loads matplotlib, and where glyphs fail the toy benchmark stands in.
        from avalanche_mind.data.glyphs import glyph_class_incremental

        bench = glyph_class_incremental(n_experiences=n_exp, n_classes=N_CLASSES, train_per_class=args.many_train,
                                        test_per_class=args.many_test, seed=0)
        return bench, "glyphs"
    except Exception as error:
        bench = toy_class_incremental(n_experiences=n_exp, classes_per_experience=N_CLASSES // n_exp,
                                      per_class=args.many_train, test_per_class=args.many_test, image_size=32)
        return bench, f"toy ({type(error).__name__})"


def capacity_fraction(capacity: str, n_exp: int) -> Any:
    """``"equal"``, ``"1/n"`` (1 / n_exp) or a float fraction."""
    if capacity == "equal":
        return capacity
    return 1.0 / n_exp if capacity == "1/n" else float(capacity)


def task_shares(ownership: OwnershipMap, n_exp: int) -> List[float]:
    """Share of the (non-classifier) gated weights each task owns."""
    layers = {n: l for n, l in ownership.layers.items() if n != ownership.classifier_name}
    total = sum(l.weight.numel() for l in layers.values())
    return [sum(int((l.owner == t).sum()) for l in layers.values()) / total for t in range(n_exp)]


def new_mind(n_exp: int, cap: Any, args) -> MIND:
    torch.manual_seed(0)
    return MIND(
        model=small_cnn(N_CLASSES, width=args.many_width), n_experiences=n_exp, capacity=cap,
        teacher_epochs=args.many_epochs, train_epochs=args.many_epochs, teacher_milestones=(10**6,),
        milestones=(10**6,), train_mb_size=32, eval_mb_size=500, lr=0.01, teacher_lr=0.01, temperature=4.0, seed=0,
        evaluator=EvaluationPlugin(*mind_metrics(experience=False, stream=True), loggers=[]),
    )


def many_row(bench, data_name: str, n_exp: int, capacity: str, args) -> Dict[str, Any]:
    cap = capacity_fraction(capacity, n_exp)
    strategy = new_mind(n_exp, cap, args)
    start = time.perf_counter()
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    results = strategy.eval(bench.test_stream)
    eval_s = time.perf_counter() - start
    metric = {k.split("_")[1]: v for k, v in results.items() if k.startswith("Top1_") and "Stream" in k}
    shares = task_shares(strategy.ownership, n_exp)
    return {
        "data": data_name, "experiences": n_exp, "capacity": capacity if capacity != "1/n" else f"1/n={cap:.3f}",
        "TAw": metric.get("TAw"), "TAg": metric.get("TAg"), "TaskId": metric.get("TaskId"),
        "used": statistics.mean(strategy.ownership.capacity_used().values()), "first_task_share": shares[0],
        "last_task_share": shares[-1], "train_s": train_s, "eval_s": eval_s,
        "owner_dtype": str(next(iter(strategy.ownership.layers.values())).owner.dtype),
    }


def run_many(args) -> Dict[str, Any]:
    rows = []
    for n_exp in args.many_splits:
        bench, data_name = many_benchmark(n_exp, args)
        for capacity in args.many_capacities:
            rows.append(many_row(bench, data_name, n_exp, capacity, args))
            print(f"  many: {n_exp} experiences, capacity {capacity}: done", file=sys.stderr, flush=True)
    return {"rows": rows, "settings": {
        "model": f"small_cnn(width={args.many_width})", "epochs": args.many_epochs,
        "train_per_class": args.many_train, "test_per_class": args.many_test,
    }}


def print_many(res) -> str:
    rows = [[r["data"], r["experiences"], r["capacity"], r["TAw"], r["TAg"], r["TaskId"], r["used"],
             r["first_task_share"], r["last_task_share"], r["owner_dtype"], r["train_s"], r["eval_s"]]
            for r in res["rows"]]
    s = res["settings"]
    return (f"settings: {s}\n\n" + table(
        ["data", "experiences", "capacity", "TAw", "TAg", "TaskId", "weights used", "task 0 share",
         "last task share", "owner", "train s", "eval s"], rows))
