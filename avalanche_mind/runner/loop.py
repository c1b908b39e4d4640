"""The comparison itself: every strategy, every seed, on one benchmark, evaluated after each experience.

After each training experience a strategy is evaluated on the whole test stream;
the per-experience TAg/TAw/TaskId accuracies fill its accuracy matrices, from which
:mod:`avalanche_mind.runner.report` derives every figure and writes the outputs.

Each (strategy, seed) run is a :class:`RunTask` of plain values, seeded at its start
and independent of every other, so an executor may run the tasks one after another
(:func:`run_serial`) or elsewhere (:mod:`avalanche_mind.runner.parallel`: processes,
Ray) and the figures are the same. A run that fails is reported and the others kept.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import os
import platform
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import avalanche
import torch
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind.data.registry import load_benchmark
from avalanche_mind.inference.metrics import mind_metrics
from avalanche_mind.io.random_state import training_rng_kept
from avalanche_mind.runner import records, report
from avalanche_mind.runner.baselines import normalisation_of
from avalanche_mind.runner.presets import Preset
from avalanche_mind.runner.probes import MetricRow, PeakRSS, ResourceProbe
from avalanche_mind.runner.reproducible import seed_everything
from avalanche_mind.runner.strategies import STRATEGIES, RunContext, StrategySpec
from avalanche_mind.runner.streams import describe_stream, runnable
from avalanche_mind.runner.validation import validation_benchmark

WandBFactory = Callable[[str, int, Dict[str, Any]], Any]
"""``make_wandb_logger(name, seed, config)``: the W&B logger of one (strategy, seed) run (``--wandb``)."""


class OutputError(Exception):
    """The results could not be written where asked (the table was printed first)."""


@dataclass(frozen=True)
class RunTask:
    """One (strategy, seed) run in plain, picklable values: what a worker process or a Ray task is sent."""

    name: str
    seed: int
    preset: Preset
    data_root: Optional[str]
    device: str
    rules: Tuple[str, ...] = ()
    make_wandb_logger: Optional[WandBFactory] = None
    validation: bool = False
    """Train on the training parts of the validation split and score on its validation parts (``--tune``)."""

    @property
    def label(self) -> str:
        return f"[{self.name} seed {self.seed}]"


@dataclass(frozen=True)
class RunFailed:
    """A run that raised: its error in one line and the traceback, as text (always picklable)."""

    error: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, error: BaseException) -> "RunFailed":
        return cls(f"{type(error).__name__}: {error}",
                   "".join(traceback.format_exception(type(error), error, error.__traceback__)))


Outcome = Union[Dict[str, Any], RunFailed]
Done = Callable[[int, Outcome], None]
Executor = Callable[..., List[Outcome]]
"""``execute(tasks, log, done=None)``: every task's outcome, in the tasks' order; ``done(i, outcome)`` is called
as each task finishes (the runner records it then, so a kill loses only the runs in progress)."""


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


def context_for(preset: Preset, stream: Dict[str, Any], device: str) -> RunContext:
    """The strategies' shared build context on a stream described by :func:`describe_stream`."""
    return RunContext(preset=preset, n_experiences=stream["n_experiences"], num_classes=stream["num_classes"],
                      in_channels=stream["in_channels"], scenario=stream["scenario"], device=device)


_LOADED: Dict[str, Tuple[Any, Dict[str, Any]]] = {}


def loaded(preset: Preset, data_root: Optional[str], validation: bool = False) -> Tuple[Any, Dict[str, Any]]:
    """The preset's benchmark and its description, loaded once per process (a worker's runs share it).

    Completed with what Avalanche's strategies read (:func:`avalanche_mind.runner.streams.runnable`), so a
    user's ``benchmark_from_datasets`` without classes timeline or task labels trains every strategy.

    ``validation``: instead, the benchmark whose test stream is the validation split
    of the training stream (:func:`avalanche_mind.runner.validation.validation_benchmark`).
    """
    key = repr((preset.benchmark, sorted(dict(preset.benchmark_kwargs).items()), data_root, validation))
    if key not in _LOADED:
        _LOADED.clear()
        benchmark = runnable(load_benchmark(preset.benchmark, data_root, **dict(preset.benchmark_kwargs)))
        if validation:
            benchmark = validation_benchmark(benchmark)
        _LOADED[key] = (benchmark, describe_stream(benchmark))
    return _LOADED[key]


def run_task(task: RunTask, log: Callable[[str], None]) -> Dict[str, Any]:
    """One task in this process: the benchmark (loaded once per process), then :func:`run_strategy`."""
    benchmark, stream = loaded(task.preset, task.data_root, task.validation)
    return run_strategy(task.name, STRATEGIES[task.name], context_for(task.preset, stream, task.device), benchmark,
                        task.seed, log, task.make_wandb_logger, task.rules)


def run_serial(tasks: Sequence[RunTask], log: Callable[[str], None], done: Optional[Done] = None) -> List[Outcome]:
    """Every task in this process, one after another; a failed run is reported and the next one runs."""
    outcomes: List[Outcome] = []
    for i, task in enumerate(tasks):
        if i == 0 or tasks[i - 1].name != task.name:
            log(f"Strategy {STRATEGIES[task.name].label}")
        try:
            outcomes.append(run_task(task, log))
        except Exception as error:  # noqa: BLE001 - reported with the results; the other runs go on
            outcomes.append(RunFailed.from_exception(error))
            log(f"  {task.label} failed: {outcomes[-1].error}")
        if done is not None:
            done(i, outcomes[-1])
    return outcomes


def _row(values: Dict[int, float], n: int) -> List[Optional[float]]:
    return [values.get(j) for j in range(n)]


def _mean_of(values: Dict[int, float]) -> Optional[float]:
    return sum(values.values()) / len(values) if values else None


def run_strategy(
    name: str,
    spec: StrategySpec,
    base: RunContext,
    benchmark,
    seed: int,
    log: Callable[[str], None],
    make_wandb_logger: Optional[WandBFactory] = None,
    rules: Sequence[str] = (),
) -> Dict[str, Any]:
    """Train ``name`` on the stream, evaluate after each experience, measure time, memory and parameters.

    ``rules``: task-inference rules under which the final model (MIND, PackNet) is also
    evaluated, for the ablation: the same trained weights, only the TAg choice differs.
    """
    collector = MetricRow()
    probe = ResourceProbe()
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
        with training_rng_kept(strategy):  # the baselines' evaluations too: figures independent of the schedule
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
                seen = report.seen_curve(matrices["TAg"][-1:], [i + 1])[0]
                log(f"  [{name} seed {seed}] experience {i + 1}/{base.n_experiences}: TAg on seen "
                    f"{100 * (seen or 0):.1f}%  ({time.perf_counter() - wall:.0f} s)")
    normalisation = normalisation_of(strategy.model)
    by_rule = evaluate_rules(strategy, rules, collector, test_stream) if hasattr(strategy, "task_inference") else {}
    inversion = list(getattr(strategy, "negative_log", []))  # negatives="inversion": BatchNorm matching per task
    del strategy
    gc.collect()
    tag, taw, taskid = matrices["TAg"], matrices["TAw"], matrices["TaskId"]
    run = {
        "seed": seed,
        "tag": report.final_accuracy(tag),
        "taw": report.final_accuracy(taw),
        "taskid": report.final_accuracy(taskid),
        "forgetting_tag": report.forgetting(tag) if not spec.joint else None,
        "forgetting_taw": report.forgetting(taw) if not spec.joint else None,
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
        "curve_tag": report.seen_curve(tag, trained),
        "curve_taw": report.seen_curve(taw, trained),
        "normalisation": normalisation,
        "rules": by_rule,
        "inversion": inversion,
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


def evaluate_rules(strategy, rules: Sequence[str], collector: MetricRow, test_stream) -> Dict[str, Dict[str, float]]:
    """Final TAg/TAw/TaskId of the trained ``strategy`` under each task-inference rule."""
    out: Dict[str, Dict[str, float]] = {}
    trained_rule = strategy.task_inference
    try:
        for rule in rules:
            strategy.task_inference = rule
            collector.reset()
            with training_rng_kept(strategy):
                strategy.eval(test_stream)
            out[rule] = {k.lower(): _mean_of(collector.values[k]) for k in ("TAg", "TAw", "TaskId")}
    finally:
        strategy.task_inference = trained_rule
    return out


def _mean_curve(curves: Sequence[Sequence[Optional[float]]]) -> List[Optional[float]]:
    return [sum(x) / len(x) if None not in x else None for x in zip(*curves)]


def run(
    preset: Preset,
    *,
    seeds: Sequence[int],
    strategies: Sequence[str],
    out: Path,
    data_root: Optional[str],
    device: str,
    log: Callable[[str], None],
    make_wandb_logger: Optional[WandBFactory] = None,
    rules: Sequence[str] = (),
    execute: Executor = run_serial,
    execution: Optional[Dict[str, Any]] = None,
    validation: bool = False,
) -> Dict[str, Any]:
    """Run every strategy with every seed, print the table, write every output under ``out``; returns the result.

    ``validation``: train on the training parts of the validation split and evaluate on
    its validation parts instead of the test stream (``compare --validation``).
    ``execute`` runs the (strategy, seed) tasks (default: here, one after another);
    ``execution`` describes how, for the results' environment. Failed runs are listed
    under ``"failed"`` and in the notes; the others' figures are written as usual.
    FileNotFoundError (with the data module's message) when the benchmark's data is
    missing; :class:`OutputError` when the outputs cannot be written (the table is
    printed first, and every figure saved to a file in the temporary folder).
    """
    start = time.perf_counter()
    log(f"Loading benchmark {preset.benchmark} ...")
    _, stream = loaded(preset, data_root, validation)  # missing data stops here, before any run starts
    log(f"  {stream['scenario']}-incremental, {stream['n_experiences']} experiences, "
        f"{stream['num_classes']} classes, train sizes {stream['train_sizes']}, "
        f"loaded in {time.perf_counter() - start:.0f} s")
    result: Dict[str, Any] = {
        "benchmark": preset.benchmark,
        "preset": preset.to_dict(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "seeds": list(seeds),
        "device": device,
        "evaluated_on": "validation split" if validation else "test stream",
        **{k: stream[k] for k in ("scenario", "n_experiences", "num_classes")},
        "stream": stream,
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__,
            "avalanche": getattr(avalanche, "__version__", "?"), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), **(execution or {}),
        },
        "strategies": {},
        "failed": [],
    }
    everything = [RunTask(name, seed, preset, data_root, device, tuple(rules), make_wandb_logger, validation)
                  for name in strategies for seed in seeds]
    settings = {"preset": preset.to_dict(), "device": device, "rules": list(rules), "validation": validation,
                "data_root": data_root, "torch_threads": torch.get_num_threads()}
    outcomes, result["environment"]["runs_recorded_before"] = records.run_unrecorded(everything, execute, out,
                                                                                      settings, log)
    tasks = everything
    for task, outcome in zip(tasks, outcomes):
        if isinstance(outcome, RunFailed):
            result["failed"].append({"strategy": task.name, "seed": task.seed, "error": outcome.error,
                                     "traceback": outcome.traceback})
    for name in strategies:
        spec = STRATEGIES[name]
        runs = [o for t, o in zip(tasks, outcomes) if t.name == name and not isinstance(o, RunFailed)]
        if not runs:
            continue
        result["strategies"][name] = {
            "label": spec.label,
            "normalisation": runs[0]["normalisation"],
            "runs": runs,
            **report.aggregate(runs),
            "rules": report.aggregate_rules(runs),
            "tag_matrix_mean": report.mean_matrix([r["tag_matrix"] for r in runs]),
            "taw_matrix_mean": report.mean_matrix([r["taw_matrix"] for r in runs]),
            "curves": {
                "trained": runs[0]["trained"],
                "curve_tag": _mean_curve([r["curve_tag"] for r in runs]),
                "curve_taw": _mean_curve([r["curve_taw"] for r in runs]),
            },
        }
    result["total_time_s"] = time.perf_counter() - start
    result["notes"] = report.run_notes(preset, stream, result)
    result["notes"] += [f"FAILED: {f['strategy']} seed {f['seed']}: {f['error']} (not in the table)"
                        for f in result["failed"]]
    print(report.markdown_table(result), flush=True)  # before writing: a failed write loses no figure
    try:
        report.write_all(result, out)
    except report.PartlyWritten as error:
        raise OutputError(f"could not write every output under {out} ({error.strerror or error}); its results.json "
                          f"holds every figure: once there is space, draw the table and plots with compare --redraw "
                          f"{out}") from error
    except OSError as error:
        fallback = Path(tempfile.gettempdir()) / f"compare-results-{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        try:
            report.write_json(result, fallback / "results.json")
            saved = (f"every figure is saved in {fallback / 'results.json'} instead (its table and plots: "
                     f"compare --redraw {fallback})")
        except OSError:
            saved = "the table above has the figures"
        raise OutputError(f"could not write the results under {out} ({error.strerror or error}); {saved}") from error
    log(f"Wrote {out}")
    return result
