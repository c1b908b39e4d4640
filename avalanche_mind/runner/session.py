"""One comparison as ``avalanche-mind compare`` asks for it: the checks, the output folder's lock, the executor.

:mod:`avalanche_mind.runner.compare` parses the command line without torch and hands the
parsed arguments here (:func:`run_command`) unless they only ask for help or the presets;
the exit statuses are documented there.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from avalanche_mind.data.registry import check_benchmark_name
from avalanche_mind.data.user import UserBenchmarkError
from avalanche_mind.io.locking import OutputBusy, OutputLock
from avalanche_mind.logging.wandb_options import check_wandb_names, wandb_logger_from_args
from avalanche_mind.preflight import CLIError, check_device, check_writable
from avalanche_mind.runner import parallel, records, report, tuning
from avalanche_mind.runner.loop import OutputError, loaded, run, run_serial
from avalanche_mind.runner.overrides import check_overrides, with_overrides
from avalanche_mind.runner.presets import Preset, get_preset
from avalanche_mind.runner.reproducible import default_threads, set_threads
from avalanche_mind.settings import TASK_INFERENCE_RULES


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


def user_errors(args: argparse.Namespace) -> Optional[str]:
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
    if args.benchmark:
        try:
            check_benchmark_name(args.benchmark)
        except ValueError as error:
            return str(error)
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


def run_command(args: argparse.Namespace) -> int:
    """The comparison (or ``--tune``, ``--redraw``) the parsed ``args`` ask for; the exit status.

    :class:`CLIError` for a user error found before any training."""
    if args.redraw is not None:
        return redraw(args.redraw)
    problem = user_errors(args)
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
    default_out = Path("results") / f"{preset.benchmark.replace(':', '-')}-{stamp}"  # a user's module:function too
    out = args.resume_from or args.out or (tuning.RECORDS if args.tune else default_out)
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
    except UserBenchmarkError as error:  # the user's module:function, named with the cause
        raise CLIError(str(error)) from None
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


__all__ = ["WandBRuns", "redraw", "run_command", "user_errors", "wandb_factory"]
