"""Compare MIND with Avalanche's baselines on one benchmark, with one seed or several.

Usage (from the repository root)::

    python benchmarks/compare.py                         # glyphs-cpu: the offline default
    python benchmarks/compare.py --preset glyphs-domain-cpu
    python benchmarks/compare.py --preset cifar100 --data-root ~/data --seeds 0 1 2 --device cuda
    python benchmarks/compare.py --tiny --out /tmp/smoke   # seconds; what the tests run
    python benchmarks/compare.py --list-presets
    python benchmarks/compare.py --tiny --strategies mind naive --wandb --wandb-mode offline

Strategies: MIND, MIND with self-distillation, MIND's PackNet-like ablation
(self-distillation, beta 0, BatchNorm frozen after the first experience), Avalanche's
PackNet, LwF, Naive fine-tuning (lower bound) and Joint training (upper bound), all
on the same backbone and data. After each training experience every strategy is
evaluated on the whole test stream; the run writes ``results.json`` (every figure
and the accuracy matrices), ``results.csv``, ``results.md`` (the table, also
printed) and PNG plots under ``--out`` (default ``results/<benchmark>-<timestamp>/``).
With ``--wandb`` every (strategy, seed) is also one Weights & Biases run, grouped
by the run name: its configuration (the preset, benchmark and strategy), the
per-experience TAg/TAw/TaskId accuracies, the accuracy matrices (table and
heatmap), forgetting, loss curves, and the final figures in the run's summary.

Exit status: 0 on success, 2 when the benchmark's data is missing (the data
module's message is printed, without a stack trace) or an argument is invalid
(checked before any training: ``--set`` types, ``--device``, a writable ``--out``),
1 when the results could not be written after all (the table is printed first,
and every figure saved to a file in the temporary folder).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import os
import platform
import random
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    # Run as a script (``python benchmarks/compare.py``): make the checkout importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.presets import PRESETS, Preset, get_preset, with_overrides  # noqa: E402

# ------------------------------------------------------------------ strategies


@dataclass(frozen=True)
class StrategySpec:
    label: str
    build: Callable[["RunContext"], Any]
    joint: bool = False
    """Trained once on the whole stream (one accuracy-matrix row) instead of experience by experience."""


@dataclass
class RunContext:
    """What a strategy builder needs; the same for every strategy of a run except the probes."""

    preset: Preset
    n_experiences: int
    num_classes: int
    in_channels: int
    scenario: str  # "class" or "domain"
    device: str
    seed: int = 0
    evaluator: Any = None
    plugins: List[Any] = field(default_factory=list)


def _build_mind(**variant: Any) -> Callable[[RunContext], Any]:
    def build(ctx: RunContext):
        from avalanche_mind import MIND

        from benchmarks.baselines import mind_backbone

        p = ctx.preset
        model = mind_backbone(p.model, ctx.num_classes, ctx.in_channels, **p.model_kwargs)
        settings = dict(variant)
        if settings.pop("paper", False):
            settings = {**_paper_settings(), **settings}
        elif not settings:  # the defaults row: the preset may set MIND's keywords
            settings = dict(p.mind_kwargs)
        return MIND(
            model=model, n_experiences=ctx.n_experiences,
            teacher_epochs=p.teacher_epochs, teacher_milestones=p.teacher_milestones, teacher_lr=p.teacher_lr,
            train_epochs=p.train_epochs, milestones=p.milestones, lr=p.lr, lr_gamma=p.lr_gamma,
            weight_decay=p.weight_decay, beta=settings.pop("beta", p.beta),
            temperature=p.temperature, capacity=p.capacity, train_mb_size=p.batch_size, eval_mb_size=p.eval_batch_size,
            device=ctx.device, plugins=ctx.plugins, evaluator=ctx.evaluator, seed=ctx.seed, **settings,
        )

    return build


def _baseline(name: str) -> Callable[[RunContext], Any]:
    def build(ctx: RunContext):
        from benchmarks.baselines import BASELINES

        return BASELINES[name](ctx)

    return build


def _paper_settings() -> Dict[str, Any]:
    from avalanche_mind import PAPER_SETTINGS

    return dict(PAPER_SETTINGS)


STRATEGIES: Dict[str, StrategySpec] = {
    "mind": StrategySpec("MIND", _build_mind()),
    "mind-paper": StrategySpec("MIND (paper's settings)", _build_mind(paper=True)),
    # Rungs of the ablation ladder between the paper's method and the defaults.
    "mind-paper-he": StrategySpec("MIND paper, He re-init of new weights", _build_mind(paper=True, new_weights="random")),
    "mind-paper-rotation": StrategySpec("MIND paper + rotation rejection", _build_mind(paper=True, rejection="rotation")),
    "mind-sd": StrategySpec("MIND self-distillation (paper's settings)", _build_mind(paper=True, self_distillation=True)),
    "mind-packnet-like": StrategySpec(
        "MIND PackNet-like (SD, beta 0, BN frozen)",
        _build_mind(paper=True, self_distillation=True, beta=0.0, bn_per_task=False),
    ),
    "packnet": StrategySpec("PackNet", _baseline("packnet")),
    "lwf": StrategySpec("LwF", _baseline("lwf")),
    "naive": StrategySpec("Naive (lower bound)", _baseline("naive")),
    "joint": StrategySpec("Joint (upper bound)", _baseline("joint"), joint=True),
}

LADDER = ("mind-paper-he", "mind-paper-rotation", "mind-sd", "mind-packnet-like")
"""Ablations (rungs between the paper's method and the defaults, and the paper's own): run on request."""
DEFAULT_STRATEGIES = tuple(name for name in STRATEGIES if name not in LADDER)

# ------------------------------------------------------------------ measurement

_METRIC = re.compile(r"^Top1_(TAg|TAw|TaskId)_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


def _metric_logger():
    from avalanche.logging import BaseLogger

    class MetricRow(BaseLogger):
        """Keeps the per-experience TAg/TAw/TaskId values emitted by the last ``eval``."""

        def __init__(self) -> None:
            super().__init__()
            self.values: Dict[str, Dict[int, float]] = {}

        def reset(self) -> None:
            self.values = {"TAg": {}, "TAw": {}, "TaskId": {}}

        def log_single_metric(self, name, value, x_plot) -> None:
            match = _METRIC.match(name)
            if match:
                self.values[match.group(1)][int(match.group(2))] = float(value)

    return MetricRow()


def _probe_plugin():
    from avalanche.core import SupervisedPlugin

    class ResourceProbe(SupervisedPlugin):
        """Peak parameters (model + every module a plugin holds, e.g. a teacher or LwF's old
        model) and other tensor state (buffers, ownership maps, BN snapshots, recorded
        logits, weight copies), sampled while each experience trains."""

        def __init__(self) -> None:
            super().__init__()
            self.params_kept = 0
            self.state_bytes = 0

        def _sample(self, strategy) -> None:
            params, state = held_tensors(strategy)
            self.params_kept = max(self.params_kept, params)
            self.state_bytes = max(self.state_bytes, state)

        def before_training_iteration(self, strategy, **kwargs) -> None:
            if strategy.clock.train_exp_iterations == 0:
                self._sample(strategy)

        def after_training_epoch(self, strategy, **kwargs) -> None:
            self._sample(strategy)

    return ResourceProbe()


def held_tensors(strategy) -> tuple:
    """(parameter count, bytes of other tensors) held by the strategy's model and plugins.

    Walks the model, MIND's state and every plugin except the evaluator, descending
    into Avalanche/avalanche_mind objects, containers and modules (not the
    optimiser, whose moments every strategy has alike). Shared tensors count once.
    """
    import torch
    from torch import nn

    params: Dict[int, int] = {}
    other: Dict[int, int] = {}
    seen = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Parameter):
            params[id(obj)] = obj.numel()
        elif isinstance(obj, torch.Tensor):
            other.setdefault(id(obj), obj.numel() * obj.element_size())
        elif isinstance(obj, nn.Module):
            for p in obj.parameters():
                params[id(p)] = p.numel()
            for b in obj.buffers():
                other.setdefault(id(b), b.numel() * b.element_size())
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v, depth + 1)
        elif type(obj).__module__.split(".")[0] in ("avalanche", "avalanche_mind", "benchmarks") and hasattr(
            obj, "__dict__"
        ):
            if obj is strategy or obj is getattr(strategy, "evaluator", None):
                return
            for v in vars(obj).values():
                visit(v, depth + 1)

    visit(strategy.model, 0)
    visit(getattr(strategy, "state", None), 0)
    for plugin in strategy.plugins:
        visit(plugin, 0)
    return sum(params.values()), sum(other.values())


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ benchmark


def load_benchmark(preset: Preset, data_root: Optional[str]):
    """Build the preset's benchmark; FileNotFoundError (with the data module's message) if data is missing."""
    kwargs = dict(preset.benchmark_kwargs)
    if preset.benchmark == "toy":
        from avalanche_mind.data.toy import toy_class_incremental

        return toy_class_incremental(**kwargs)
    if preset.benchmark == "toy-domain":
        from avalanche_mind.data.toy import toy_domain_incremental

        return toy_domain_incremental(**kwargs)
    from avalanche_mind.data.real import load_benchmark as load

    return load(preset.benchmark, data_root, **kwargs)


def describe_stream(benchmark) -> Dict[str, Any]:
    """Number of experiences, classes, input channels and the scenario (class or domain)."""
    from avalanche_mind.strategy import experience_classes

    train = list(benchmark.train_stream)
    classes = [experience_classes(e) for e in train]
    first_x = train[0].dataset[0][0]
    domain = len(train) > 1 and all(set(c) == set(classes[0]) for c in classes)
    return {
        "n_experiences": len(train),
        "n_test_experiences": len(list(benchmark.test_stream)),
        "num_classes": max(max(c) for c in classes) + 1,
        "in_channels": int(first_x.shape[0]),
        "input_shape": list(first_x.shape),
        "scenario": "domain" if domain else "class",
        "classes_per_experience": [len(c) for c in classes],
        "train_sizes": [len(e.dataset) for e in train],
        "test_sizes": [len(e.dataset) for e in benchmark.test_stream],
    }


# ------------------------------------------------------------------ one strategy


def _row(values: Dict[int, float], n: int) -> List[Optional[float]]:
    return [values.get(j) for j in range(n)]


def wandb_config(name: str, spec: StrategySpec, base: RunContext, seed: int) -> Dict[str, Any]:
    """What a W&B run of one (strategy, seed) records as its configuration."""
    preset = base.preset
    return {
        "method": name,
        "method_label": spec.label,
        "seed": seed,
        "device": base.device,
        "preset": preset.to_dict(),
        "benchmark": {"name": preset.benchmark, **dict(preset.benchmark_kwargs), "scenario": base.scenario,
                      "n_experiences": base.n_experiences, "num_classes": base.num_classes,
                      "in_channels": base.in_channels},
    }


def run_strategy(
    name: str,
    spec: StrategySpec,
    base: RunContext,
    benchmark,
    seed: int,
    log: Callable[[str], None],
    make_wandb_logger: Optional[Callable[[str, int, Dict[str, Any]], Any]] = None,
    rules: Sequence[str] = (),
) -> Dict[str, Any]:
    """Train ``name`` on the stream, evaluate after each experience, measure time, memory and parameters.

    ``make_wandb_logger(name, seed, config)``: builds the W&B logger of this run (``--wandb``).
    ``rules``: task-inference rules under which the final model (MIND, PackNet) is also
    evaluated, for the ablation: the same trained weights, only the TAg choice differs.
    """
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_mind.metrics import mind_metrics
    from benchmarks.report import final_accuracy, forgetting, seen_curve

    collector = _metric_logger()
    probe = _probe_plugin()
    wandb_logger = make_wandb_logger(name, seed, wandb_config(name, spec, base, seed)) if make_wandb_logger else None
    loggers = [collector] + ([wandb_logger] if wandb_logger is not None else [])
    evaluator = EvaluationPlugin(*mind_metrics(experience=True, stream=False), loggers=loggers)
    ctx = dataclasses.replace(base, seed=seed, evaluator=evaluator, plugins=[probe])
    train_stream, test_stream = benchmark.train_stream, benchmark.test_stream
    n_test = len(list(test_stream))
    matrices: Dict[str, List[List[Optional[float]]]] = {"TAg": [], "TAw": [], "TaskId": []}
    trained: List[int] = []
    train_time = eval_time = 0.0

    def evaluate(strategy) -> None:
        nonlocal eval_time
        collector.reset()
        start = time.perf_counter()
        strategy.eval(test_stream)
        eval_time += time.perf_counter() - start
        for kind in matrices:
            matrices[kind].append(_row(collector.values[kind], n_test))

    seed_everything(seed)
    wall = time.perf_counter()
    with PeakRSS() as rss:
        strategy = spec.build(ctx)
        model_params = sum(p.numel() for p in strategy.model.parameters())
        if spec.joint:
            start = time.perf_counter()
            strategy.train(train_stream, eval_streams=[])
            train_time += time.perf_counter() - start
            trained.append(base.n_experiences)
            evaluate(strategy)
        else:
            for i, experience in enumerate(train_stream):
                start = time.perf_counter()
                strategy.train(experience, eval_streams=[])
                train_time += time.perf_counter() - start
                trained.append(i + 1)
                evaluate(strategy)
                seen = seen_curve(matrices["TAg"][-1:], [i + 1])[0]
                log(f"  [{name} seed {seed}] experience {i + 1}/{base.n_experiences}: TAg on seen "
                    f"{100 * (seen or 0):.1f}%  ({time.perf_counter() - wall:.0f} s)")
    normalisation = _normalisation(strategy.model)
    by_rule = evaluate_rules(strategy, rules, collector, test_stream) if hasattr(strategy, "task_inference") else {}
    del strategy
    gc.collect()
    tag, taw, taskid = matrices["TAg"], matrices["TAw"], matrices["TaskId"]
    run = {
        "seed": seed,
        "tag": final_accuracy(tag),
        "taw": final_accuracy(taw),
        "taskid": final_accuracy(taskid),
        "forgetting_tag": forgetting(tag) if not spec.joint else None,
        "forgetting_taw": forgetting(taw) if not spec.joint else None,
        "params_model": model_params,
        "params_kept": max(probe.params_kept, model_params),
        "state_mb": probe.state_bytes / 2**20,
        "peak_rss_mb": rss.increase_mb,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "wall_time_s": time.perf_counter() - wall,
        "tag_matrix": tag,
        "taw_matrix": taw,
        "taskid_matrix": taskid,
        "trained": trained,
        "curve_tag": seen_curve(tag, trained),
        "curve_taw": seen_curve(taw, trained),
        "normalisation": normalisation,
        "rules": by_rule,
    }
    if wandb_logger is not None:
        if wandb_logger.run is not None:
            wandb_logger.run.summary.update(
                {f"final/{k}": run[k] for k in ("tag", "taw", "taskid", "forgetting_tag", "forgetting_taw",
                                                 "params_model", "params_kept", "wall_time_s") if run[k] is not None}
            )
        wandb_logger.finish()
    taw_text = "n/a" if run["taw"] is None else f"{100 * run['taw']:.1f}%"
    log(f"  [{name} seed {seed}] done: TAg {100 * (run['tag'] or 0):.1f}%, TAw {taw_text}, "
        f"{run['wall_time_s']:.0f} s")
    return run


def evaluate_rules(strategy, rules: Sequence[str], collector, test_stream) -> Dict[str, Dict[str, float]]:
    """Final TAg/TAw/TaskId of the trained ``strategy`` under each task-inference rule."""
    out: Dict[str, Dict[str, float]] = {}
    trained_rule = strategy.task_inference
    try:
        for rule in rules:
            strategy.task_inference = rule
            collector.reset()
            strategy.eval(test_stream)
            out[rule] = {k.lower(): _mean_of(collector.values[k]) for k in ("TAg", "TAw", "TaskId")}
    finally:
        strategy.task_inference = trained_rule
    return out


def _mean_of(values: Dict[int, float]) -> Optional[float]:
    return sum(values.values()) / len(values) if values else None


def _normalisation(model) -> str:
    from benchmarks.baselines import normalisation_of

    return normalisation_of(model)


# ------------------------------------------------------------------ the run


def _notes(preset: Preset, stream: Dict[str, Any], strategies: Sequence[str], result: Dict[str, Any]) -> List[str]:
    notes = [preset.budget_note()]
    norms = {STRATEGIES[n].label: result["strategies"][n]["normalisation"] for n in strategies}
    notes.append(
        "Backbone: the same network for every strategy ("
        + f"{preset.model} {dict(preset.model_kwargs)}); normalisation per strategy: "
        + "; ".join(f"{k}: {v}" for k, v in norms.items())
        + ". PackNet uses GroupNorm(affine=False) in place of BatchNorm because Avalanche 0.6.0's "
        "PackNetModel.wrap refuses modules with running statistics (and any norm with its own affine "
        "parameters, which would be shared across tasks unprotected)."
    )
    if "packnet" in strategies:
        notes.append(
            "PackNet is Avalanche's PackNetModel + PackNetPlugin on a SupervisedTemplate (the PackNet "
            "wrapper nests user plugins in a list, silently skipping them); prune proportions "
            "1 - 1/(T - i) give every experience 1/T of each layer, like MIND's 'equal' capacity; "
            + ("the classifier is multi-head (each task trains its own classes' rows, not pruned). "
               if stream["scenario"] == "class" else "the classifier is pruned like every other layer. ")
            + f"PackNet's TAg uses MIND's task inference (avalanche_mind.inference.predict): every task's "
            f"mask on every input, max softmax of its output slice at temperature {preset.temperature}."
        )
    notes.append(
        "TAw for single-head strategies (Naive, LwF, Joint) is the argmax restricted to the evaluated "
        "experience's classes" + (" (the same as TAg here: every experience has every class)."
                                  if stream["scenario"] == "domain" else ".")
        + " TaskId (task-identification accuracy) exists only for MIND and PackNet."
    )
    notes.append(
        "Accuracy: mean over test experiences after the last experience. Forgetting: mean over old "
        "experiences of (best earlier accuracy - final accuracy), in points. Params kept: peak number of "
        "parameters held (model + teacher / old-model copies). Other state: peak bytes of non-parameter "
        "tensors held (BN statistics and snapshots, ownership maps, PackNet masks, recorded teacher "
        "logits, weight-guard copies). Peak RSS: sampled process memory above its level at the "
        "strategy's start."
    )
    if stream["scenario"] == "domain":
        notes.append(f"Domain-incremental: every experience has the same {stream['num_classes']} classes; "
                     "MIND's and PackNet's output slice is the whole classifier.")
    notes.extend(preset.notes)
    return notes


def run(
    preset: Preset,
    *,
    seeds: Sequence[int],
    strategies: Sequence[str],
    out: Path,
    data_root: Optional[str],
    device: str,
    log: Callable[[str], None],
    make_wandb_logger: Optional[Callable[[str, int, Dict[str, Any]], Any]] = None,
    rules: Sequence[str] = (),
) -> Dict[str, Any]:
    start = time.perf_counter()
    log(f"Loading benchmark {preset.benchmark} ...")
    benchmark = load_benchmark(preset, data_root)
    stream = describe_stream(benchmark)
    log(f"  {stream['scenario']}-incremental, {stream['n_experiences']} experiences, "
        f"{stream['num_classes']} classes, train sizes {stream['train_sizes']}, "
        f"loaded in {time.perf_counter() - start:.0f} s")
    base = RunContext(
        preset=preset, n_experiences=stream["n_experiences"], num_classes=stream["num_classes"],
        in_channels=stream["in_channels"], scenario=stream["scenario"], device=device,
    )
    import avalanche
    import torch

    result: Dict[str, Any] = {
        "benchmark": preset.benchmark,
        "preset": preset.to_dict(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "seeds": list(seeds),
        "device": device,
        **{k: stream[k] for k in ("scenario", "n_experiences", "num_classes")},
        "stream": stream,
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__,
            "avalanche": getattr(avalanche, "__version__", "?"), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
        },
        "strategies": {},
    }
    from benchmarks.report import aggregate, aggregate_rules, mean_matrix

    for name in strategies:
        spec = STRATEGIES[name]
        log(f"Strategy {spec.label}")
        runs = [run_strategy(name, spec, base, benchmark, seed, log, make_wandb_logger, rules) for seed in seeds]
        entry = {
            "label": spec.label,
            "normalisation": runs[0]["normalisation"],
            "runs": runs,
            **aggregate(runs),
            "rules": aggregate_rules(runs),
            "tag_matrix_mean": mean_matrix([r["tag_matrix"] for r in runs]),
            "taw_matrix_mean": mean_matrix([r["taw_matrix"] for r in runs]),
            "curves": {
                "trained": runs[0]["trained"],
                "curve_tag": [sum(x) / len(x) if None not in x else None for x in zip(*[r["curve_tag"] for r in runs])],
                "curve_taw": [sum(x) / len(x) if None not in x else None for x in zip(*[r["curve_taw"] for r in runs])],
            },
        }
        result["strategies"][name] = entry
    result["total_time_s"] = time.perf_counter() - start
    result["notes"] = _notes(preset, stream, strategies, result)
    from benchmarks.report import markdown_table, write_all, write_json

    print(markdown_table(result), flush=True)  # before writing: a failed write loses no figure
    try:
        write_all(result, out)
    except OSError as error:
        fallback = Path(tempfile.gettempdir()) / f"compare-results-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
        try:
            write_json(result, fallback)
            saved = f"every figure is saved in {fallback} instead"
        except OSError:
            saved = "the table above has the figures"
        raise OutputError(f"could not write the results under {out} ({error.strerror or error}); {saved}") from error
    log(f"Wrote {out}")
    return result


class OutputError(Exception):
    """The results could not be written where asked (the table was printed first)."""


def check_overrides(base: Preset, preset: Preset) -> None:
    """ValueError naming the ``--set`` field whose value has the wrong type, or is not finite."""
    import math

    for f in dataclasses.fields(Preset):
        old, new = getattr(base, f.name), getattr(preset, f.name)
        if new == old and type(new) is type(old):
            continue
        if isinstance(old, bool):
            ok, kind = isinstance(new, bool), "True or False"
        elif isinstance(old, int):
            ok, kind = isinstance(new, int) and not isinstance(new, bool), "an integer"
        elif isinstance(old, float):
            ok = isinstance(new, (int, float)) and not isinstance(new, bool) and math.isfinite(new)
            kind = "a finite number"
        elif isinstance(old, tuple) and all(isinstance(v, int) for v in old):
            ok = isinstance(new, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in new)
            kind = "integers such as 35 or (70, 90)"
        elif isinstance(old, str) and f.name != "capacity":
            ok, kind = isinstance(new, str), "a string"
        else:
            continue
        if not ok:
            raise ValueError(f"--set {f.name}={new!r}: {f.name} must be {kind} (the preset has {old!r})")


# ------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    from avalanche_mind.logging import add_wandb_arguments

    parser = argparse.ArgumentParser(
        prog="compare",
        description="Compare MIND with PackNet, LwF, Naive and Joint training on one benchmark.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Presets: " + ", ".join(sorted(PRESETS)),
    )
    parser.add_argument("--preset", default="glyphs-cpu", help="configuration to run (default: glyphs-cpu)")
    parser.add_argument("--tiny", action="store_true", help="the seconds-long smoke preset (same as --preset tiny)")
    parser.add_argument("--benchmark", help="run the preset's settings on another benchmark name")
    parser.add_argument("--data-root", help="folder holding the real benchmarks' files (and the glyph cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=list(STRATEGIES),
                        metavar="NAME", help=f"strategies to run (default: {', '.join(DEFAULT_STRATEGIES)}; "
                                             f"also the ablation rungs {', '.join(LADDER)})")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<benchmark>-<timestamp>/)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto (default: cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field, e.g. --set temperature=4 (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 on cpu, where small models gain little from more and "
                             "OpenMP's spinning threads slow down 5-8x on a shared, busy machine; torch's default on GPU)")
    parser.add_argument("--rules", nargs="+", default=[], metavar="RULE",
                        help="also evaluate each final MIND/PackNet model under these task-inference rules "
                             "(max_confidence, entropy, max_logit, energy, zscore, likelihood_ratio): "
                             "the same weights, only the TAg choice differs")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    wandb = add_wandb_arguments(parser)
    wandb.description = (
        "One W&B run per (strategy, seed), named <run name>-<strategy>-seed<seed>\n"
        "and grouped by the run name (default: <preset>-<timestamp>)."
    )
    return parser


def wandb_factory(args: argparse.Namespace, preset: Preset, stamp: str):
    """``make_wandb_logger(name, seed, config)`` for ``run``, or None without ``--wandb``."""
    if not args.wandb:
        return None
    from avalanche_mind.logging import wandb_logger_from_args

    group = args.wandb_run_name or f"{preset.name}-{stamp}"

    def make(name: str, seed: int, config: Dict[str, Any]):
        return wandb_logger_from_args(args, config, run_name=f"{group}-{name}-seed{seed}", group=group,
                                      tags=[*args.wandb_tags, preset.name, name])

    return make


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        for name in sorted(PRESETS):
            print(f"{name:20s} {PRESETS[name].description}")
        return 0
    from avalanche_mind.task_id import TASK_INFERENCE_RULES

    unknown = [r for r in args.rules if r not in TASK_INFERENCE_RULES]
    if unknown:
        print(f"error: unknown --rules {unknown}; use some of {list(TASK_INFERENCE_RULES)}", file=sys.stderr)
        return 2
    try:
        preset = get_preset("tiny" if args.tiny else args.preset)
        if args.benchmark:
            preset = dataclasses.replace(preset, benchmark=args.benchmark, benchmark_kwargs={})
        base_preset = preset
        preset = with_overrides(preset, args.overrides)
        check_overrides(base_preset, preset)
    except (KeyError, ValueError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from avalanche_mind.cli import CLIError, check_device, check_writable

    stamp = f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out = args.out or Path("results") / f"{preset.benchmark}-{stamp}"
    try:  # before any training: a run must not end in a write that cannot happen
        check_device(device)
        check_writable(out, "--out", folder=True)
        if args.wandb and args.wandb_dir:
            check_writable(args.wandb_dir, "--wandb-dir", folder=True)
    except CLIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    threads = args.threads if args.threads is not None else (1 if device == "cpu" else None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        run(preset, seeds=args.seeds, strategies=args.strategies, out=out, data_root=args.data_root,
            device=device, log=log, make_wandb_logger=wandb_factory(args, preset, stamp), rules=args.rules)
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"error: the data of benchmark {preset.benchmark!r} is missing.\n{error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
