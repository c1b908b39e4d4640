"""The comparison's command line: ``avalanche-mind compare`` and ``python benchmarks/compare.py``.

::

    avalanche-mind compare                                 # glyphs-cpu: the offline default
    avalanche-mind compare --preset glyphs-domain-cpu
    avalanche-mind compare --preset cifar100 --data-root ~/data --seeds 0 1 2 --device cuda
    avalanche-mind compare --tiny --out /tmp/smoke         # seconds; what the tests run
    avalanche-mind compare --list-presets
    avalanche-mind compare --preset glyphs-cpu --tune      # the baselines' own hyperparameters (runner.tuning)
    avalanche-mind compare --tiny --strategies mind naive --wandb --wandb-mode offline
    avalanche-mind compare --seeds 0 1 2 --jobs 4           # four runs at a time, one process each
    avalanche-mind compare --seeds 0 1 2 --ray ray://head:10001   # the runs as Ray tasks (pip install -e '.[ray]')
    avalanche-mind compare --redraw results/glyphs-20261201-120000  # table and plots again, from results.json

Strategies: MIND (its defaults and the paper's method, and the ablation rungs on
request), Avalanche's PackNet, LwF, EWC, SI, Naive fine-tuning (lower bound) and
Joint training (upper bound), all on the same backbone and data. The run writes
``results.json`` (every figure and the accuracy matrices), ``results.csv``,
``results.md`` (the table, also printed) and PNG plots under ``--out`` (default
``results/<benchmark>-<timestamp>/``). With ``--wandb`` every (strategy, seed) is
also one Weights & Biases run, grouped by the run name: its configuration (the
preset, benchmark and strategy), the per-experience TAg/TAw/TaskId accuracies, the
accuracy matrices (table and heatmap), forgetting, loss curves, and the final
figures in the run's summary.

Every (strategy, seed) run is independent and seeded at its start, so ``--jobs N``
(worker processes; default: one per core on CPU) and ``--ray`` give the same figures
as one process, run by run; only the wall time changes.

Each finished (strategy, seed) run is recorded in ``--out/runs/`` at once
(:mod:`avalanche_mind.runner.records`): the same command again, or ``--resume-from
DIR``, trains only the runs not recorded. ``--out`` is locked while a comparison
writes it (:mod:`avalanche_mind.io.locking`).

Exit status: 0 on success; 2 when the benchmark's data is missing (the data module's
message is printed, without a stack trace) or an argument is invalid (checked before
any training: ``--set`` types, ``--device``, a writable and unlocked ``--out``, the
benchmark's name, ``--ray``'s address, the W&B project), one line each; 1 when the
results could not be written after all (the table is printed first, and every figure
saved in a folder of the temporary directory, which ``--redraw`` accepts) or when a
run failed (its error is printed; the other runs' results are written); 130 after Ctrl-C.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from avalanche_mind.data.registry import benchmark_names
from avalanche_mind.io.locking import OutputBusy, OutputLock
from avalanche_mind.logging.wandb_logger import add_wandb_arguments, check_wandb_names, wandb_logger_from_args
from avalanche_mind.preflight import CLIError, OneLineParser, check_device, check_writable
from avalanche_mind.runner import parallel, records, report, tuning
from avalanche_mind.runner.loop import OutputError, loaded, run, run_serial
from avalanche_mind.runner.presets import PRESETS, Preset, check_overrides, get_preset, with_overrides
from avalanche_mind.runner.reproducible import default_threads, set_threads
from avalanche_mind.runner.strategies import DEFAULT_STRATEGIES, LADDER, STRATEGIES
from avalanche_mind.task_id.rules import TASK_INFERENCE_RULES


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="compare",
        description="Compare MIND with PackNet, LwF, EWC, SI, Naive and Joint training on one benchmark.",
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
    parser.add_argument("--out", type=Path, help="output folder (default: results/<benchmark>-<timestamp>/); each "
                        "finished run is recorded in its runs/ folder at once, and a rerun with the same --out "
                        "skips the runs recorded there")
    parser.add_argument("--resume-from", type=Path, metavar="DIR",
                        help="continue the interrupted comparison whose --out was DIR (the same options): the runs "
                             "recorded in DIR/runs are not run again; the outputs go to DIR")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto (default: cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a preset field, e.g. --set temperature=4 (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per run (default: 1 on cpu, where small models gain little from more "
                             "and OpenMP's spinning threads slow down 5-8x on a shared, busy machine; torch's default "
                             "on GPU). The figures depend on it: compare runs made with the same count")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help=f"runs at a time, each in its own process (default: the number of cores, "
                             f"{os.cpu_count()}, on cpu; 1 on GPU); the figures are those of --jobs 1")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run the (strategy, seed) runs as Ray tasks on the cluster at ADDRESS, or on a local "
                             "Ray without one (pip install -e '.[ray]'; the package must be installed on the workers)")
    parser.add_argument("--rules", nargs="+", default=[], metavar="RULE",
                        help="also evaluate each final MIND/PackNet model under these task-inference rules "
                             "(max_confidence, entropy, max_logit, energy, zscore, likelihood_ratio): "
                             "the same weights, only the TAg choice differs")
    parser.add_argument("--tune", action="store_true",
                        help="instead of comparing, search the baselines' own hyperparameters (lwf, ewc, si, packnet "
                             "among --strategies) on a validation split of the training data; writes "
                             "<preset>.json under --out (default benchmarks/tuning/)")
    parser.add_argument("--redraw", type=Path, metavar="DIR",
                        help="train nothing: write the table, CSV and plots of DIR/results.json again with this "
                             "version's report (e.g. the seeds' spread on a run made before the plots showed it)")
    parser.add_argument("--validation", action="store_true",
                        help="train on 85%% of each class of each training experience and evaluate on the other 15%% "
                             "(--tune's split) instead of the test stream: to choose settings, MIND's included, "
                             "without looking at the test data")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    wandb = add_wandb_arguments(parser)
    wandb.description = (
        "One W&B run per (strategy, seed), named <run name>-<strategy>-seed<seed>\n"
        "and grouped by the run name (default: <preset>-<timestamp>)."
    )
    return parser


@dataclasses.dataclass(frozen=True)
class WandBRuns:
    """``make_wandb_logger(name, seed, config)`` for :func:`run`: plain values, so a worker process or a Ray
    task can be sent it and build its run's logger itself."""

    args: argparse.Namespace
    group: str
    preset: str

    def __call__(self, name: str, seed: int, config: Dict[str, Any]):
        return wandb_logger_from_args(self.args, config, run_name=f"{self.group}-{name}-seed{seed}",
                                      group=self.group, tags=[*self.args.wandb_tags, self.preset, name])


def wandb_factory(args: argparse.Namespace, preset: Preset, stamp: str) -> Optional[WandBRuns]:
    """The W&B loggers' factory for :func:`run`, or None without ``--wandb``."""
    if not args.wandb:
        return None
    wandb_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k.startswith("wandb")})
    return WandBRuns(wandb_args, args.wandb_run_name or f"{preset.name}-{stamp}", preset.name)


def redraw(folder: Path) -> int:
    """``--redraw``: the outputs of ``folder/results.json`` (or of the JSON file ``folder``) written again, no
    training; the exit status."""
    path = folder / "results.json"
    if folder.is_file():  # e.g. the fallback file of a comparison that could not write its --out
        path, folder = folder, folder.parent
    try:
        result = json.loads(path.read_text())
        report.write_all(result, folder)
    except FileNotFoundError:
        print(f"error: --redraw needs a comparison's output folder; {path} does not exist", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as error:
        print(f"error: --redraw: {path} is not a comparison's results.json ({error!r})", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: --redraw could not write under {folder} ({error.strerror or error}); make it writable, or "
              f"copy {path.name} to a writable folder and redraw there", file=sys.stderr)
        return 2
    print(report.markdown_table(result), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison ``argv`` asks for; returns the exit status (130 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except CLIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _user_errors(args: argparse.Namespace) -> Optional[str]:
    """The first argument error found without loading anything, or None."""
    unknown = [r for r in args.rules if r not in TASK_INFERENCE_RULES]
    if unknown:
        return f"unknown --rules {unknown}; use some of {list(TASK_INFERENCE_RULES)}"
    if args.ray is not None:
        try:
            parallel.check_ray_address(args.ray)
        except ValueError as error:
            return str(error)
        if not parallel.ray_installed():
            return parallel.RAY_MISSING
    if args.jobs is not None and args.jobs < 1:
        return "--jobs must be >= 1"
    if args.tune and not set(args.strategies) & set(tuning.GRIDS):
        return f"--tune searches {', '.join(tuning.GRIDS)}; name some of them in --strategies"
    if args.benchmark and args.benchmark not in benchmark_names():
        return f"unknown --benchmark {args.benchmark!r}; use one of {', '.join(benchmark_names())}"
    if args.resume_from is not None:
        if args.out is not None and args.out != args.resume_from:
            return "--resume-from DIR writes to DIR: leave out --out, or give the same folder"
        if not (args.resume_from / records.RUNS).is_dir():
            return (f"--resume-from {args.resume_from}: no runs are recorded there ({args.resume_from / records.RUNS} "
                    "does not exist); give the --out folder of the interrupted comparison")
    try:
        check_wandb_names(args)
    except ValueError as error:
        return str(error)
    return None


def _main(args: argparse.Namespace) -> int:
    if args.list_presets:
        for name in sorted(PRESETS):
            print(f"{name:20s} {PRESETS[name].description}")
        return 0
    if args.redraw is not None:
        return redraw(args.redraw)
    problem = _user_errors(args)
    if problem:
        raise CLIError(problem)
    try:
        preset = get_preset("tiny" if args.tiny else args.preset)
        if args.benchmark:
            preset = dataclasses.replace(preset, benchmark=args.benchmark, benchmark_kwargs={})
        base_preset = preset
        preset = with_overrides(preset, args.overrides)
        check_overrides(base_preset, preset)
    except (KeyError, ValueError) as error:
        raise CLIError(error.args[0] if error.args else error) from None
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stamp = f"{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out = args.resume_from or args.out or (tuning.RECORDS if args.tune else Path("results") / f"{preset.benchmark}-{stamp}")
    # before any training: a run must not end in a write that cannot happen
    check_device(device)
    check_writable(out, "--out", folder=True)
    if args.wandb and args.wandb_dir:
        check_writable(args.wandb_dir, "--wandb-dir", folder=True)
    try:
        lock = OutputLock(out, "--out").acquire()
    except OutputBusy as error:
        raise CLIError(str(error)) from None
    try:
        return _compare(args, preset, device, out, stamp)
    finally:
        lock.release()


def _compare(args: argparse.Namespace, preset: Preset, device: str, out: Path, stamp: str) -> int:
    threads = default_threads(args.threads, device)
    set_threads(threads, device)
    jobs = args.jobs or (os.cpu_count() or 1 if device == "cpu" else 1)
    if args.ray is not None:
        execute, execution = parallel.on_ray(args.ray, threads, verbose=not args.quiet), {"ray": args.ray or "local"}
    elif jobs > 1 and (args.tune or len(args.strategies) * len(args.seeds) > 1):
        execute, execution = parallel.in_processes(jobs, threads), {"jobs": jobs}
    else:
        execute, execution = run_serial, {"jobs": 1}
    failed = []
    try:  # loaded once here (the runs find it loaded): a builder's refusal is the user's error
        loaded(preset, args.data_root, validation=args.tune or args.validation)
    except FileNotFoundError:
        pass  # reported below, with the data module's message
    except (TypeError, ValueError) as error:
        raise CLIError(f"benchmark {preset.benchmark!r} refuses its settings "
                       f"{dict(preset.benchmark_kwargs)}: {error}") from None

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    try:
        if args.tune:
            tuning.tune(preset, strategies=args.strategies, seeds=args.seeds, folder=out, data_root=args.data_root,
                        device=device, log=log, execute=execute)
        else:
            failed = run(preset, seeds=args.seeds, strategies=args.strategies, out=out, data_root=args.data_root,
                         device=device, log=log, make_wandb_logger=wandb_factory(args, preset, stamp),
                         rules=args.rules, execute=execute, execution=execution,
                         validation=args.validation)["failed"]
    except (OutputError, tuning.SearchFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except records.RecordMismatch as error:
        raise CLIError(str(error)) from None
    except FileNotFoundError as error:
        print(f"error: the data of benchmark {preset.benchmark!r} is missing.\n{error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.tune:
            kept = "nothing of the interrupted search was written"
        else:
            done = len(list((out / records.RUNS).glob("*.json"))) if (out / records.RUNS).is_dir() else 0
            kept = (f"{done} finished run(s) are recorded in {out / records.RUNS}; continue with the same command "
                    f"and --resume-from {out}")
        print(f"\ncompare: interrupted; {kept}", file=sys.stderr)
        return 130
    for failure in failed:
        print(f"error: {failure['strategy']} seed {failure['seed']} failed: {failure['error']} (the other runs' "
              "results are written; rerun the same command to run it again)", file=sys.stderr)
    return 1 if failed else 0
