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

This script parses the arguments and runs the sections; each section is a module
``benchmarks/perf_<section>.py`` (``run_<section>(args)`` returns its figures,
``print_<section>(figures)`` its Markdown table). ``perf_common.py`` holds the
timing rounds, tables and the measured model; ``perf_reference.py`` the
pre-optimisation code the "before" and "reference" rows are measured against.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple

if __package__ in (None, ""):
    # Run as a script: make the checkout importable (after PYTHONPATH, so that
    # PYTHONPATH=<another checkout> measures that one, with its benchmarks/perf_*.py).
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.perf_common import machine  # noqa: E402
from benchmarks.perf_inference import print_inference, run_inference  # noqa: E402
from benchmarks.perf_many import print_many, run_many  # noqa: E402
from benchmarks.perf_memory import memory_child, print_memory, run_memory  # noqa: E402
from benchmarks.perf_state import print_state, run_state  # noqa: E402
from benchmarks.perf_training import print_training, run_training  # noqa: E402


class Section(NamedTuple):
    run: Callable[[Any], Dict[str, Any]]
    show: Callable[[Dict[str, Any]], str]
    title: str


SECTIONS: Dict[str, Section] = {
    "inference": Section(run_inference, print_inference, "1. TAg inference: time / (T x plain dense forward)"),
    "training": Section(run_training, print_training, "2. Training overhead: MIND distillation step / plain KD step"),
    "state": Section(run_state, print_state, "3. Compact state: saved bytes / dense float32 weights"),
    "memory": Section(run_memory, print_memory, "3b. Memory: default MIND vs self-distillation (small run)"),
    "many": Section(run_many, print_many, "4. Many experiences: glyphs, 10 vs 50 experiences"),
}
"""Every section, in the order they run and print."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
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


def print_header(info: Dict[str, Any], command: str, quick: bool) -> None:
    print(f"# MIND performance ({'quick' if quick else 'full'})\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} thread(s), "
          f"CUDA {'yes' if info['cuda'] else 'no'}; load average {info['load_average']}; {info['date']}")
    print(f"command: {command}\n")


def run_section(section: Section, args) -> Dict[str, Any]:
    """Run one section, print its table and return its figures."""
    start = time.perf_counter()
    res = section.run(args)
    res["seconds"] = time.perf_counter() - start
    print(f"## {section.title}\n")
    print(section.show(res))
    print(f"\n({res['seconds']:.0f} s)\n", flush=True)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.quick)))
        return 0
    info = machine()
    command = "python benchmarks/perf.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print_header(info, command, args.quick)
    report: Dict[str, Any] = {"machine": info, "command": command, "args": vars(args)}
    for name, section in SECTIONS.items():
        if name in args.sections:
            report[name] = run_section(section, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
