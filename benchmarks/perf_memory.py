"""Section ``memory`` of ``benchmarks/perf.py``: the default MIND against self-distillation.

Tensors held and peak RSS on a small run, one subprocess each
(``perf.py --_memory-child VARIANT``, which runs ``memory_child``), so that
neither run's allocations count against the other.
"""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Set

import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import Tensor

from avalanche_mind import MIND, gresnet32
from avalanche_mind.data.toy import toy_class_incremental
from benchmarks.perf_common import table

VARIANTS = ("default", "self_distillation")
PERF_SCRIPT = Path(__file__).resolve().with_name("perf.py")


class MeasuredAdamW(torch.optim.AdamW):
    """AdamW that calls ``on_step(where)`` after every step."""

    def __init__(self, params, where: str, on_step: Callable[[str], None], **kw):
        super().__init__(params, **kw)
        self.where, self.on_step = where, on_step

    def step(self, closure=None):
        out = super().step(closure)
        self.on_step(self.where)
        return out


class TensorPeak:
    """Peak bytes of the CPU tensor storages alive that were not alive at creation."""

    def __init__(self) -> None:
        self.before: Set[int] = {t.untyped_storage().data_ptr() for t in live_tensors()}
        self.bytes, self.where = 0, ""

    def measure(self, where: str) -> None:
        seen, total = set(), 0
        for t in live_tensors():
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self.before or key in seen or t.device.type != "cpu":
                continue
            seen.add(key)
            total += storage.nbytes()
        if total > self.bytes:
            self.bytes, self.where = total, where


def live_tensors() -> Iterator[Tensor]:
    for obj in gc.get_objects():
        try:
            if isinstance(obj, Tensor):
                yield obj
        except ReferenceError:
            continue


def vm_hwm_mb() -> Optional[float]:
    """Peak resident set size of this process (VmHWM of /proc/self/status), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(variant: str, quick: bool) -> Dict[str, Any]:
    """One small MIND run; peak bytes of the tensors it holds (measured at every optimiser step)."""
    torch.manual_seed(0)
    bench = toy_class_incremental(n_experiences=2, classes_per_experience=5, per_class=40 if quick else 100,
                                  test_per_class=10, image_size=32)
    peak = TensorPeak()
    rss_before = vm_hwm_mb()
    model = gresnet32(10)
    strategy = MIND(
        model=model, n_experiences=2, teacher_epochs=1, train_epochs=1, train_mb_size=32, eval_mb_size=64,
        optimizer=MeasuredAdamW(model.parameters(), "distillation", peak.measure, lr=0.035),
        teacher_optimizer=lambda params: MeasuredAdamW(params, "teacher", peak.measure, lr=0.005),
        self_distillation=(variant == "self_distillation"),
        evaluator=EvaluationPlugin(loggers=[]),
    )
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    return {
        "variant": variant,
        "peak_tensor_bytes": peak.bytes,
        "peak_phase": peak.where,
        "model_param_bytes": sum(p.numel() * 4 for p in model.parameters()),
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
        # across fork + exec, so a child spawned by a big parent would report the parent's.
        "maxrss_mb": vm_hwm_mb(),
        "rss_before_mb": rss_before,
    }


def run_child(variant: str, args) -> Dict[str, Any]:
    cmd = [sys.executable, str(PERF_SCRIPT), "--_memory-child", variant, "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"variant": variant, "error": out.stderr[-2000:]}
    return json.loads(lines[-1])


def run_memory(args) -> Dict[str, Any]:
    return {"rows": [run_child(variant, args) for variant in VARIANTS]}


def print_memory(res) -> str:
    rows = []
    for r in res["rows"]:
        if "error" in r:
            rows.append([r["variant"], "error", "", "", ""])
            continue
        rows.append([r["variant"], r["peak_tensor_bytes"], r["peak_tensor_bytes"] / r["model_param_bytes"],
                     r["peak_phase"], r["maxrss_mb"], r.get("rss_before_mb")])
    return table(["MIND variant", "peak bytes of tensors held", "/ model params bytes", "phase of the peak",
                  "peak RSS (MB)", "peak RSS before training (MB)"], rows)
