"""MIND performance ratios (issue 5), measured side by side in one process.

Usage (from the repository root)::

    python benchmarks/perf.py                     # every section, full sizes (~20 min on 2 CPU cores)
    python benchmarks/perf.py --quick             # smaller sizes (a few minutes)
    python benchmarks/perf.py --sections inference training --threads 1 --repeats 5
    python benchmarks/perf.py --json perf.json    # also write every figure as JSON

Sections:

- ``inference``: task-agnostic (TAg) inference of T sub-networks on N inputs,
  divided by T plain forward passes of the same dense network on the same N
  inputs. Ways compared: the reference implementation's (deep-copy the model for
  every task on every batch), ``SubnetworkBank`` in ``module`` mode
  (``functional_call`` loop, the code before issue 5), ``graph`` mode (traced,
  BatchNorm folded, channels-last, in-place ReLU) and ``batched`` mode
  (``torch.func.vmap`` over stacked weights). Also checks that every way gives the
  same TAg/TAw predictions.
- ``training``: one distillation step of MIND (teacher forward + gated forward +
  backward + gradient gating + AdamW step + restoring frozen weights) divided by
  one plain knowledge-distillation step of the dense network (same teacher forward,
  same loss, same optimiser).
- ``state``: bytes of a saved MIND state (``model.state_dict()`` + the strategy's
  ``state.state_dict()``) divided by the bytes of the dense float32 weights.
- ``memory``: tensors held and peak RSS of the default MIND against the
  self-distillation variant on a small run (one subprocess each).
- ``many``: TAw/TAg accuracy on glyphs split into 10 and into 50 experiences, with
  the ``"equal"`` capacity and with a fraction of the FREE weights.

Timings are medians over ``--repeats`` rounds; each round runs every variant once,
in turn, so that load from other processes hits all of them alike, and the
ratios are taken within a round.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import gc
import inspect
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    # Run as a script: make the checkout importable (after PYTHONPATH, so that
    # PYTHONPATH=<another checkout> measures that one, e.g. the code before a change).
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from avalanche_mind import OwnershipMap, gated_layers, gresnet32  # noqa: E402
from avalanche_mind.inference import SubnetworkBank, predict  # noqa: E402
from avalanche_mind.losses import js_divergence  # noqa: E402
from avalanche_mind.models.gresnet import ResNet  # noqa: E402
from avalanche_mind.plugins.batchnorm import batchnorm_modules, batchnorm_state, load_batchnorm_state  # noqa: E402
from avalanche_mind.plugins.gating import WeightGuard, guard_for, guarded_step  # noqa: E402
from avalanche_mind.state import MINDState  # noqa: E402
from avalanche_mind.task_id import ScoreStatistics, collect_statistics  # noqa: E402

SECTIONS = ("inference", "training", "state", "memory", "many")
SLOW_WAYS = ("deep-copy (reference)", "batched vmap")
"""Ways timed only up to ``--slow-max-tasks`` tasks (they cost minutes per round beyond)."""
TEMPERATURE = 6.5


# ----------------------------------------------------------------- utilities
def machine() -> Dict[str, Any]:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def rounds(variants: Dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> Dict[str, List[float]]:
    """Seconds per call of each variant, ``repeats`` interleaved rounds."""
    if warmup:
        for fn in variants.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(num: List[float], den: List[float], scale: float = 1.0) -> float:
    return statistics.median(a / (scale * b) for a, b in zip(num, den))


def supports(fn: Callable, argument: str) -> bool:
    return argument in inspect.signature(fn).parameters


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------- a model with T tasks
def model_with_tasks(
    n_tasks: int, num_classes: int = 100, seed: int = 0, capacity: Any = "equal"
) -> Tuple[nn.Module, OwnershipMap, List[Dict[str, Tensor]], List[Tensor]]:
    """gresnet32 whose ownership map holds ``n_tasks`` random sub-networks.

    No training: allocation as MIND does it (random rule), and every task gets
    its own BatchNorm statistics and affine terms (random, standing in for trained
    ones), snapshotted as the BatchNorm plugin does.
    """
    torch.manual_seed(seed)
    model = gresnet32(num_classes)
    ownership = OwnershipMap(model, n_tasks, capacity)
    generator = torch.Generator().manual_seed(seed)
    per = max(num_classes // n_tasks, 1)
    snapshots, slices = [], []
    with torch.no_grad():
        for task in range(n_tasks):
            classes = [c % num_classes for c in range(task * per, (task + 1) * per)]
            ownership.allocate(task, classes, generator=generator)
            for _, bn in batchnorm_modules(model):
                c = bn.num_features
                bn.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                bn.weight.copy_(0.5 + torch.rand(c, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(c, generator=generator))
            snapshots.append(batchnorm_state(model))
            slices.append(torch.tensor(sorted(set(classes))))
    return model.eval(), ownership, snapshots, slices


def dense_twin(model: nn.Module, num_classes: int = 100) -> nn.Module:
    """The same ResNet-32, not gated: the "plain forward pass" of the ratios."""
    dense = ResNet(num_classes)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".owner")}
    dense.load_state_dict(state)
    return dense.eval()


class DeepCopyBank:
    """The reference implementation's TAg inference: copy and prune the model per task, per batch."""

    def __init__(self, model, ownership, snapshots, weight_sharing=True):
        self.model, self.ownership, self.snapshots, self.weight_sharing = model, ownership, snapshots, weight_sharing

    def __len__(self) -> int:
        return len(self.snapshots)

    def all_logits(self, x: Tensor) -> List[Tensor]:
        out = []
        for task, snapshot in enumerate(self.snapshots):
            net = copy.deepcopy(self.model)
            with torch.no_grad():
                for (_, src), (_, layer) in zip(gated_layers(self.model), gated_layers(net)):
                    layer.weight.mul_(self.ownership.subnetwork_mask(src, task, self.weight_sharing))
                    layer.mask = torch.ones((), device=layer.weight.device)
            load_batchnorm_state(net, snapshot)
            out.append(net.eval()(x))
        return out


def bank(model, ownership, snapshots, mode: Optional[str]):
    if mode is None:
        return SubnetworkBank(model, ownership, snapshots, len(snapshots), True)
    return SubnetworkBank(model, ownership, snapshots, len(snapshots), True, mode=mode)


# ---------------------------------------------------------------- inference
def run_inference(args) -> Dict[str, Any]:
    has_modes = supports(SubnetworkBank.__init__, "mode")
    results = []
    for n_tasks in args.tasks:
        model, ownership, snapshots, slices = model_with_tasks(n_tasks)
        dense = dense_twin(model)
        x = torch.randn(args.n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        batches = x.split(args.batch)

        builders: Dict[str, Callable[[], Any]] = {"deep-copy (reference)": lambda: DeepCopyBank(model, ownership, snapshots)}
        if has_modes:
            builders["module loop (before)"] = lambda: bank(model, ownership, snapshots, "module")
            builders["graph loop"] = lambda: bank(model, ownership, snapshots, "graph")
            if not args.no_batched:
                builders["batched vmap"] = lambda: bank(model, ownership, snapshots, "batched")
            builders["auto (shipped)"] = lambda: bank(model, ownership, snapshots, "auto")
        else:
            builders["module loop (before)"] = lambda: bank(model, ownership, snapshots, None)

        with torch.no_grad():
            built = {}
            build_ms = {}
            for name, build in builders.items():
                start = time.perf_counter()
                built[name] = build()
                build_ms[name] = 1000 * (time.perf_counter() - start)
            modes = {k: getattr(b, "mode", "deep-copy") for k, b in built.items()}

            # Same answers?
            before = built["module loop (before)"]
            reference = [torch.stack(before.all_logits(b)) for b in batches]
            reference_tag = [predict(before, xb, slices, TEMPERATURE).tag_class for xb in batches]
            agree = {}
            for name, b in built.items():
                if n_tasks > args.slow_max_tasks and name in SLOW_WAYS:
                    continue
                logits = [torch.stack(b.all_logits(xb)) for xb in batches]
                err = max(float((l - r).abs().max() / r.abs().max()) for l, r in zip(logits, reference))
                same_tag = all(
                    torch.equal(predict(b, xb, slices, TEMPERATURE).tag_class, ref)
                    for xb, ref in zip(batches, reference_tag)
                )
                same_taw = all(
                    torch.equal(l[t][:, slices[t]].argmax(1), r[t][:, slices[t]].argmax(1))
                    for l, r in zip(logits, reference) for t in range(n_tasks)
                )
                agree[name] = {"max_rel_logit_err": err, "same_tag": same_tag, "same_taw": same_taw}

            def classify(b):
                return lambda: [predict(b, xb, slices, TEMPERATURE) for xb in batches]

            variants = {"dense": lambda: [dense(xb) for xb in batches]}
            variants.update({
                name: classify(b) for name, b in built.items()
                if not (n_tasks > args.slow_max_tasks and name in SLOW_WAYS)
            })
            if "auto (shipped)" in built and hasattr(built["auto (shipped)"], "features_and_logits"):
                # MIND's default task choice: the same passes, returning penultimate features too,
                # plus each task's feature distance and likelihood ratio (statistics from random inputs).
                shipped, stats = built["auto (shipped)"], ScoreStatistics()
                g = torch.Generator().manual_seed(2)
                for task, s_ in enumerate(slices):
                    data = [(torch.randn(64, 3, 32, 32, generator=g), s_[torch.arange(64) % len(s_)])]
                    collect_statistics(stats, shipped.features_and_logits, slices, task, lambda: iter(data))
                variants["auto + shared_foreign (default rule)"] = lambda: [
                    predict(shipped, xb, slices, TEMPERATURE, "shared_foreign", statistics=stats) for xb in batches
                ]
                modes["auto + shared_foreign (default rule)"] = shipped.mode
            if has_modes:
                # An equally optimised dense pass (BatchNorm folded, channels-last,
                # in-place ReLU): what "graph" would cost with no masks at all.
                full, full_own, full_snap, _ = model_with_tasks(1)
                opt_dense = SubnetworkBank(full, full_own, full_snap, 1, True, mode="graph")
                variants["dense, optimised like graph"] = lambda: [opt_dense.logits(xb, 0) for xb in batches]
            times = rounds(variants, args.repeats)
        dense_s = statistics.median(times["dense"])
        for name in variants:
            if name == "dense":
                continue
            tasks_here = 1 if name.startswith("dense") else n_tasks
            results.append({
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


# ----------------------------------------------------------------- training
class OriginalGuard:
    """WeightGuard as it was before issue 5 (one where() + copy per guarded parameter)."""

    def __init__(self, trainable):
        self._entries = [(p, mask, p.detach().clone()) for p, mask in trainable]

    @torch.no_grad()
    def zero_frozen_grads(self):
        for param, mask, _ in self._entries:
            if param.grad is None:
                continue
            if mask is None:
                param.grad = None
            else:
                param.grad.mul_(mask)

    @torch.no_grad()
    def restore(self):
        for param, mask, saved in self._entries:
            if mask is None:
                param.copy_(saved)
            else:
                param.copy_(torch.where(mask, param, saved))


def guard_entries(model, ownership, owner):
    entries = []
    gated = {id(l.weight): l for l in ownership.layers.values()}
    for p in model.parameters():
        layer = gated.get(id(p))
        if layer is not None:
            entries.append((p, ownership.owned_by(layer, owner)))
    return entries


def run_training(args) -> Dict[str, Any]:
    n_tasks, task = 10, 5
    model, ownership, _, slices = model_with_tasks(n_tasks)
    # Task 5 is being distilled: 0..4 frozen, FREE weights frozen at zero.
    for t in range(task + 1, n_tasks):
        for layer in ownership.layers.values():
            layer.owner[layer.owner == t] = -1
    ownership.zero_free()
    ownership.activate(task, True)
    model.train()
    slice_ = slices[task]
    lookup = torch.full((100,), -1, dtype=torch.long)
    lookup[slice_] = torch.arange(len(slice_))

    teacher_gated = copy.deepcopy(model)
    for _, layer in gated_layers(teacher_gated):
        layer.mask = torch.ones(())
    teacher_gated.eval()
    dense = ResNet(100).train()

    g = torch.Generator().manual_seed(2)
    x = torch.randn(args.train_batch, 3, 32, 32, generator=g)
    y = slice_[torch.randint(len(slice_), (args.train_batch,), generator=g)]

    def step_fn(student, teacher, optimizer, guard):
        def step():
            for _ in range(args.steps):
                with torch.no_grad():
                    t_logits = teacher(x)[:, slice_]
                out = student(x)[:, slice_]
                loss = F.cross_entropy(out, lookup[y]) + 5.0 * js_divergence(t_logits, out)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                guarded_step(optimizer, guard)
        return step

    def fresh_mind(guard_cls):
        m = copy.deepcopy(model)
        own = OwnershipMap(m, n_tasks)
        own.activate(task, True)
        if guard_cls is WeightGuard:
            guard = guard_for(m, own, owner=task, shared_trainable=False, batchnorm_trainable=True)
        else:
            guard = guard_cls(guard_entries(m, own, task))
        opt = torch.optim.AdamW(m.parameters(), lr=0.035, weight_decay=0.0)
        return m, opt, guard

    m_new, opt_new, guard_new = fresh_mind(WeightGuard)
    m_old, opt_old, guard_old = fresh_mind(OriginalGuard)
    opt_dense = torch.optim.AdamW(dense.parameters(), lr=0.035, weight_decay=0.0)
    variants = {
        # The same teacher module (MIND's: a gated copy, every weight active) in every variant.
        "plain KD step (dense)": step_fn(dense, teacher_gated, opt_dense, None),
        "MIND step, WeightGuard before": step_fn(m_old, teacher_gated, opt_old, guard_old),
        "MIND step, WeightGuard after": step_fn(m_new, teacher_gated, opt_new, guard_new),
    }
    times = rounds(variants, args.repeats)

    # The guard alone, per step (many repetitions: it is short).
    def guard_only(guard, m):
        def run():
            for p in m.parameters():
                p.grad = torch.ones_like(p)
            for _ in range(20):
                guard.zero_frozen_grads()
                guard.restore()
        return run

    guard_times = rounds({"before": guard_only(guard_old, m_old), "after": guard_only(guard_new, m_new)}, args.repeats)
    # Gated vs dense forward+backward alone (no teacher, no optimiser).
    def fwd_bwd(net):
        def run():
            for _ in range(args.steps):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x)[:, slice_], lookup[y]).backward()
        return run

    fb_times = rounds({"dense": fwd_bwd(dense), "gated": fwd_bwd(m_new)}, args.repeats)
    base = times["plain KD step (dense)"]
    rows = []
    for name, ts in times.items():
        rows.append({"variant": name, "ratio": median_ratio(ts, base), "ms_per_step": 1000 * statistics.median(ts) / args.steps})
    return {
        "batch": args.train_batch,
        "rows": rows,
        "guard_ms_per_step": {k: 1000 * statistics.median(v) / 20 for k, v in guard_times.items()},
        "gated_fwd_bwd_ratio": median_ratio(fb_times["gated"], fb_times["dense"]),
    }


def print_training(res) -> str:
    rows = [[r["variant"], r["ratio"], r["ms_per_step"]] for r in res["rows"]]
    out = table([f"step (batch {res['batch']})", "ratio (/ plain KD step)", "ms/step"], rows)
    g = res["guard_ms_per_step"]
    out += (f"\n\nWeightGuard alone (zero_frozen_grads + restore): before {g['before']:.2f} ms/step, "
            f"after {g['after']:.2f} ms/step; gated forward+backward / dense: {res['gated_fwd_bwd_ratio']:.3f}")
    return out


# -------------------------------------------------------------------- state
def saved_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def checkpoint_variants(model, n_tasks: int, state: MINDState) -> Dict[str, Any]:
    """What ``avalanche_mind.checkpoint.save_checkpoint`` writes for this model and state."""
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_mind import MIND
    from avalanche_mind.checkpoint import checkpoint_payload

    strategy = MIND(model=model, n_experiences=n_tasks, evaluator=EvaluationPlugin(loggers=[]))
    strategy.state.load_state_dict(state.state_dict())
    out = {"after: checkpoint file (save_checkpoint), optimizer state empty": checkpoint_payload(strategy)}
    # After an experience the AdamW moments are there too (two float32 tensors per parameter).
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    strategy.optimizer.step()
    strategy.optimizer.zero_grad(set_to_none=True)
    out["after: checkpoint file (save_checkpoint), with AdamW moments"] = checkpoint_payload(strategy)
    return out


def run_state(args) -> Dict[str, Any]:
    from avalanche_mind.layers import compact_state_dict

    rows = []
    for n_tasks in args.state_tasks:
        model, ownership, snapshots, slices = model_with_tasks(n_tasks)
        dense = dense_twin(model)
        raw = 4 * sum(p.numel() for p in dense.parameters())
        raw_weights = 4 * ownership.n_weights()
        dense_saved = saved_bytes(dense.state_dict())
        state = MINDState()
        state.slices = [s.tolist() for s in slices]
        state.experience_ids = list(range(n_tasks))
        state.bn_snapshots = snapshots
        listed = {**state.state_dict(), "bn_snapshots": [dict(s) for s in snapshots]}
        variants = {
            # The format before issue 5: int8 owner, one dict of tensors per BatchNorm snapshot.
            "before: int8 owner, one dict per snapshot": {"model": model.state_dict(), "state": listed},
            "after: packed owner (4-bit if T<=15), stacked snapshots": {
                "model": compact_state_dict(model), "state": state.state_dict(),
            },
        }
        variants.update(checkpoint_variants(model, n_tasks, state))
        for name, obj in variants.items():
            size = saved_bytes(obj)
            rows.append({
                "T": n_tasks, "variant": name, "bytes": size,
                "ratio_raw": size / raw, "ratio_saved_dense": size / dense_saved,
                "raw_dense_bytes": raw, "raw_gated_weight_bytes": raw_weights, "saved_dense_bytes": dense_saved,
            })
        # Components (raw tensor bytes) for the record.
        owner_bytes = sum(l.owner.numel() * l.owner.element_size() for l in ownership.layers.values())
        snap_bytes = sum(v.numel() * v.element_size() for s in snapshots for v in s.values())
        rows[-1]["components"] = {"owner": owner_bytes, "snapshots": snap_bytes, "dense_params": raw}
    return {"rows": rows}


def print_state(res) -> str:
    rows = [[r["T"], r["variant"], r["bytes"], r["ratio_raw"], r["ratio_saved_dense"]] for r in res["rows"]]
    out = table(["T", "saved MIND state", "bytes", "/ raw float32 params", "/ saved dense state_dict"], rows)
    for r in res["rows"]:
        if "components" in r:
            c = r["components"]
            out += (f"\nT={r['T']}: raw owner bytes {c['owner']} ({c['owner'] / c['dense_params']:.3f} of the params),"
                    f" raw BN snapshot bytes {c['snapshots']} ({c['snapshots'] / c['dense_params']:.3f})")
    return out


# ------------------------------------------------------------------- memory
def memory_child(variant: str, quick: bool) -> Dict[str, Any]:
    """One small MIND run; peak bytes of the tensors it holds (measured at every optimiser step)."""
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_mind import MIND
    from avalanche_mind.data.toy import toy_class_incremental

    torch.manual_seed(0)
    bench = toy_class_incremental(n_experiences=2, classes_per_experience=5, per_class=40 if quick else 100,
                                  test_per_class=10, image_size=32)
    before = {t.untyped_storage().data_ptr() for t in _live_tensors()}
    rss_before = _vm_hwm_mb()
    peak = {"bytes": 0, "where": ""}

    def measure(where: str) -> None:
        seen, total = set(), 0
        for t in _live_tensors():
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in before or key in seen or t.device.type != "cpu":
                continue
            seen.add(key)
            total += storage.nbytes()
        if total > peak["bytes"]:
            peak.update(bytes=total, where=where)

    class Measured(torch.optim.AdamW):
        def __init__(self, params, where, **kw):
            super().__init__(params, **kw)
            self.where = where

        def step(self, closure=None):
            out = super().step(closure)
            measure(self.where)
            return out

    model = gresnet32(10)
    strategy = MIND(
        model=model, n_experiences=2, teacher_epochs=1, train_epochs=1, train_mb_size=32, eval_mb_size=64,
        optimizer=Measured(model.parameters(), "distillation", lr=0.035),
        teacher_optimizer=lambda params: Measured(params, "teacher", lr=0.005),
        self_distillation=(variant == "self_distillation"),
        evaluator=EvaluationPlugin(loggers=[]),
    )
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    return {
        "variant": variant,
        "peak_tensor_bytes": peak["bytes"],
        "peak_phase": peak["where"],
        "model_param_bytes": sum(p.numel() * 4 for p in model.parameters()),
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
        # across fork + exec, so a child spawned by a big parent would report the parent's.
        "maxrss_mb": _vm_hwm_mb(),
        "rss_before_mb": rss_before,
    }


def _vm_hwm_mb() -> Optional[float]:
    """Peak resident set size of this process (VmHWM of /proc/self/status), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _live_tensors():
    for obj in gc.get_objects():
        try:
            if isinstance(obj, Tensor):
                yield obj
        except ReferenceError:
            continue


def run_memory(args) -> Dict[str, Any]:
    rows = []
    for variant in ("default", "self_distillation"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", variant, "--threads", str(args.threads)]
        if args.quick:
            cmd.append("--quick")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            rows.append({"variant": variant, "error": out.stderr[-2000:]})
            continue
        rows.append(json.loads(lines[-1]))
    return {"rows": rows}


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


# --------------------------------------------------------------------- many
def run_many(args) -> Dict[str, Any]:
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_mind import MIND, mind_metrics, small_cnn

    rows = []
    data_name = "glyphs"
    for n_exp in args.many_splits:
        try:
            from avalanche_mind.data.glyphs import glyph_class_incremental

            bench = glyph_class_incremental(n_experiences=n_exp, n_classes=100, train_per_class=args.many_train,
                                            test_per_class=args.many_test, seed=0)
            n_classes = 100
        except Exception as error:  # glyphs not available: fall back to the toy benchmark
            from avalanche_mind.data.toy import toy_class_incremental

            data_name = f"toy ({type(error).__name__})"
            n_classes = 100
            bench = toy_class_incremental(n_experiences=n_exp, classes_per_experience=100 // n_exp,
                                          per_class=args.many_train, test_per_class=args.many_test, image_size=32)
        for capacity in args.many_capacities:
            cap = capacity if capacity == "equal" else (1.0 / n_exp if capacity == "1/n" else float(capacity))
            torch.manual_seed(0)
            model = small_cnn(n_classes, width=args.many_width)
            strategy = MIND(
                model=model, n_experiences=n_exp, capacity=cap, teacher_epochs=args.many_epochs,
                train_epochs=args.many_epochs, teacher_milestones=(10**6,), milestones=(10**6,),
                train_mb_size=32, eval_mb_size=500, lr=0.01, teacher_lr=0.01, temperature=4.0, seed=0,
                evaluator=EvaluationPlugin(*mind_metrics(experience=False, stream=True), loggers=[]),
            )
            start = time.perf_counter()
            for experience in bench.train_stream:
                strategy.train(experience, eval_streams=[])
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            results = strategy.eval(bench.test_stream)
            eval_s = time.perf_counter() - start
            metric = {k.split("_")[1]: v for k, v in results.items() if k.startswith("Top1_") and "Stream" in k}
            used = strategy.ownership.capacity_used()
            per_task = [
                sum(int((l.owner == t).sum()) for n, l in strategy.ownership.layers.items()
                    if n != strategy.ownership.classifier_name)
                for t in range(n_exp)
            ]
            total = sum(l.weight.numel() for n, l in strategy.ownership.layers.items()
                        if n != strategy.ownership.classifier_name)
            rows.append({
                "data": data_name, "experiences": n_exp, "capacity": capacity if capacity != "1/n" else f"1/n={cap:.3f}",
                "TAw": metric.get("TAw"), "TAg": metric.get("TAg"), "TaskId": metric.get("TaskId"),
                "used": statistics.mean(used.values()), "first_task_share": per_task[0] / total,
                "last_task_share": per_task[-1] / total, "train_s": train_s, "eval_s": eval_s,
                "owner_dtype": str(next(iter(strategy.ownership.layers.values())).owner.dtype),
            })
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


# --------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier on a shared machine)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per timing (default 5, quick 3)")
    p.add_argument("--tasks", type=int, nargs="+", default=None, help="T values of the inference section")
    p.add_argument("--n", type=int, default=None, help="inputs classified per timing (default 256, quick 64)")
    p.add_argument("--batch", type=int, default=None, help="evaluation batch size (default 128, quick 64)")
    p.add_argument("--no-batched", action="store_true", help="skip the vmap way (the slowest on CPU)")
    p.add_argument("--slow-max-tasks", type=int, default=10,
                   help="time the deep-copy and vmap ways only up to this many tasks (default 10)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch (default 128, quick 32)")
    p.add_argument("--steps", type=int, default=2, help="training steps per timing")
    p.add_argument("--state-tasks", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--many-splits", type=int, nargs="+", default=None)
    p.add_argument("--many-capacities", nargs="+", default=["equal", "1/n", "0.05"],
                   help="'equal', '1/n' (a fraction 1/n_experiences) or a float fraction")
    p.add_argument("--many-epochs", type=int, default=None)
    p.add_argument("--many-train", type=int, default=None, help="training images per class")
    p.add_argument("--many-test", type=int, default=20, help="test images per class")
    p.add_argument("--many-width", type=int, default=32)
    p.add_argument("--json", type=str, default=None, help="also write every figure to this JSON file")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (3 if q else 5)
    args.tasks = args.tasks or ([1, 10] if q else [1, 10, 50])
    args.n = args.n or (64 if q else 256)
    args.batch = args.batch or (64 if q else 128)
    args.train_batch = args.train_batch or (32 if q else 128)
    args.many_splits = args.many_splits or [10, 50]
    args.many_epochs = args.many_epochs or (2 if q else 4)
    args.many_train = args.many_train or (20 if q else 60)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.quick)))
        return 0
    info = machine()
    command = "python benchmarks/perf.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# MIND performance ({'quick' if args.quick else 'full'})\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} thread(s), "
          f"CUDA {'yes' if info['cuda'] else 'no'}; load average {info['load_average']}; {info['date']}")
    print(f"command: {command}\n")
    report: Dict[str, Any] = {"machine": info, "command": command, "args": vars(args)}
    sections = {
        "inference": (run_inference, print_inference, "1. TAg inference: time / (T x plain dense forward)"),
        "training": (run_training, print_training, "2. Training overhead: MIND distillation step / plain KD step"),
        "state": (run_state, print_state, "3. Compact state: saved bytes / dense float32 weights"),
        "memory": (run_memory, print_memory, "3b. Memory: default MIND vs self-distillation (small run)"),
        "many": (run_many, print_many, "4. Many experiences: glyphs, 10 vs 50 experiences"),
    }
    for name in SECTIONS:
        if name not in args.sections:
            continue
        run, show, title = sections[name]
        start = time.perf_counter()
        res = run(args)
        res["seconds"] = time.perf_counter() - start
        report[name] = res
        print(f"## {title}\n")
        print(show(res))
        print(f"\n({res['seconds']:.0f} s)\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
