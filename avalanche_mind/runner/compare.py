"""The comparison's command line: ``avalanche-mind compare`` and ``python benchmarks/compare.py``.

::

    avalanche-mind compare                                 # glyphs-cpu: the offline default
    avalanche-mind compare --preset glyphs-domain-cpu
    avalanche-mind compare --preset cifar100 --data-root ~/data --seeds 0 1 2 --device cuda
    avalanche-mind compare --tiny --out /tmp/smoke         # seconds; what the tests run
    avalanche-mind compare --tiny --benchmark mymodule:make_benchmark   # your own Avalanche benchmark
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

This module parses the command line and reads only torch-free modules, so ``--help``
and ``--list-presets`` answer at once; the comparison itself is
:mod:`avalanche_mind.runner.session`'s, imported when one runs.

Exit status: 0 on success; 2 when the benchmark's data is missing (the data module's
message is printed, without a stack trace) or an argument is invalid (checked before
any training: ``--set`` types, ``--device``, a writable and unlocked ``--out``, the
benchmark's name or a ``module:function`` that cannot be imported, called or used,
``--ray``'s address, the W&B project), one line each; 1 when the results could not be
written after all (the table is printed first, and every figure saved in a folder of
the temporary directory, which ``--redraw`` accepts) or when a run failed (its error is
printed; the other runs' results are written); 130 after Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from avalanche_mind.logging.wandb_options import add_wandb_arguments
from avalanche_mind.preflight import CLIError, OneLineParser, WholeNamesFormatter
from avalanche_mind.runner.names import DEFAULT_STRATEGIES, LADDER, NEGATIVES, STRATEGY_NAMES, TUNED
from avalanche_mind.runner.presets import PRESETS
from avalanche_mind.settings import BENCHMARK_NAMES, TASK_INFERENCE_RULES


class _Formatter(WholeNamesFormatter, argparse.RawDescriptionHelpFormatter):
    """Names kept whole, the description and the presets' line as written."""


def build_parser() -> argparse.ArgumentParser:
    """The runner's options; every list of names in their help is built from the constant the code checks."""
    parser = OneLineParser(
        prog="compare",
        description="Compare MIND with Avalanche's baselines on one benchmark (--strategies names them).",
        formatter_class=_Formatter,
        epilog="Presets: " + ", ".join(sorted(PRESETS)),
    )
    parser.add_argument("--preset", default="glyphs-cpu",
                        help="configuration to run, one of the presets below (default: glyphs-cpu)")
    parser.add_argument("--tiny", action="store_true", help="the seconds-long smoke preset (same as --preset tiny)")
    parser.add_argument("--benchmark", metavar="NAME",
                        help=f"run the preset's settings on another benchmark: {', '.join(BENCHMARK_NAMES)}, or "
                             "package.module:function, your own function returning an Avalanche benchmark (its "
                             "keyword arguments: --set benchmark_kwargs.KEY=VALUE)")
    parser.add_argument("--data-root", help="folder holding the real benchmarks' files (and the glyph cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=STRATEGY_NAMES,
                        metavar="NAME", help=f"strategies to run (default: {', '.join(DEFAULT_STRATEGIES)}; "
                                             f"also the ablation rungs {', '.join(LADDER)}; and the cross-task "
                                             f"negatives' rows {', '.join(NEGATIVES)})")
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
                             f"({', '.join(TASK_INFERENCE_RULES)}): the same weights, only the TAg choice differs")
    parser.add_argument("--tune", action="store_true",
                        help=f"instead of comparing, search the baselines' own hyperparameters ({', '.join(TUNED)} "
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the comparison ``argv`` asks for; returns the exit status (130 after Ctrl-C)."""
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name in sorted(PRESETS):
            print(f"{name:20s} {PRESETS[name].description}")
        return 0
    from avalanche_mind.runner.session import run_command  # torch and Avalanche: only to run something

    try:
        return run_command(args)
    except CLIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
