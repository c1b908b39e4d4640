"""Many runs at once: the runner's (strategy, seed) tasks in worker processes (``--jobs``) or as Ray tasks (``--ray``).

Every task is seeded at its start, runs under the same thread count and keeps its
evaluations off the training random state (:mod:`avalanche_mind.runner.reproducible`),
so where a task runs changes no figure, only the wall time. Outcomes come back in the
tasks' order; a task that raises (or whose process dies) comes back as
:class:`~avalanche_mind.runner.loop.RunFailed` with its error, and the others run on.
Tasks are plain values (:class:`~avalanche_mind.runner.loop.RunTask`); each worker
builds its own W&B logger, and loads the benchmark once unless it inherited it.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import platform
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, List, Optional, Sequence

import torch

from avalanche_mind.runner.loop import Executor, Outcome, RunFailed, RunTask, run_task

RAY_MISSING = "--ray needs Ray, an optional extra: pip install -e '.[ray]'"

_lines: Any = None
"""In a worker process: the queue its progress lines go to (the parent prints them, one whole line at a time)."""


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _start_worker(lines, threads: Optional[int]) -> None:
    global _lines
    _lines = lines
    if threads is not None:
        torch.set_num_threads(threads)


def _in_worker(task: RunTask) -> Outcome:
    try:
        return run_task(task, _lines.put)
    except Exception as error:  # noqa: BLE001 - the parent reports it; an exception may not pickle, text does
        return RunFailed.from_exception(error)


def _print_lines(lines, log: Callable[[str], None]) -> None:
    for line in iter(lines.get, None):
        log(line)


def _context(device: str) -> multiprocessing.context.BaseContext:
    """fork on Linux for CPU runs, spawn elsewhere and for a GPU (CUDA cannot be used in a forked child).

    Forked workers start at once with this process's state: the loaded benchmark, and
    strategies, benchmarks or patches that a script or a test added at run time, which a
    spawned worker would not see. They are forked before any thread of the pool starts.
    """
    if platform.system() == "Linux" and str(device) == "cpu":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def in_processes(jobs: int, threads: Optional[int]) -> Executor:
    """Run the tasks in up to ``jobs`` worker processes of ``threads`` torch threads each."""

    def execute(tasks: Sequence[RunTask], log: Callable[[str], None]) -> List[Outcome]:
        context = _context(tasks[0].device)
        lines = context.Queue()
        printer = threading.Thread(target=_print_lines, args=(lines, log), daemon=True)
        outcomes: List[Outcome] = [RunFailed("not run")] * len(tasks)
        pool = ProcessPoolExecutor(max_workers=max(1, min(jobs, len(tasks))), mp_context=context,
                                   initializer=_start_worker, initargs=(lines, threads))
        try:
            futures = {pool.submit(_in_worker, task): i for i, task in enumerate(tasks)}  # forks the workers
            printer.start()
            for future in as_completed(futures):
                i = futures[future]
                try:
                    outcomes[i] = future.result()
                except Exception as error:  # noqa: BLE001 - the worker died (killed, out of memory)
                    outcomes[i] = RunFailed.from_exception(error)
                if isinstance(outcomes[i], RunFailed):
                    lines.put(f"  {tasks[i].label} failed: {outcomes[i].error}")
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            lines.put(None)
            if printer.ident is not None:
                printer.join()
        pool.shutdown()
        return outcomes

    return execute


def _on_ray(task: RunTask, threads: Optional[int], verbose: bool) -> Outcome:
    """One task on a Ray worker; its progress lines go to the worker's stderr, which Ray shows on the driver."""
    if threads is not None:
        torch.set_num_threads(threads)

    def log(line: str) -> None:
        if verbose:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    try:
        return run_task(task, log)
    except Exception as error:  # noqa: BLE001 - reported by the driver with the other runs' results
        return RunFailed.from_exception(error)


def on_ray(address: Optional[str], threads: Optional[int], verbose: bool = True) -> Executor:
    """Run the tasks as Ray tasks: on the cluster at ``address``, or a local Ray when None or empty.

    Joins the Ray instance this process already started if there is one (and leaves it
    running); one it starts itself it shuts down. Each task asks Ray for ``threads`` CPUs.
    """

    def execute(tasks: Sequence[RunTask], log: Callable[[str], None]) -> List[Outcome]:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=address or None, log_to_driver=verbose,
                     **({} if address else {"include_dashboard": False}))
        try:
            remote = ray.remote(num_cpus=threads or 1)(_on_ray)
            refs = {remote.remote(task, threads, verbose): i for i, task in enumerate(tasks)}
            outcomes: List[Outcome] = [RunFailed("not run")] * len(tasks)
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                i = refs[done[0]]
                try:
                    outcomes[i] = ray.get(done[0])
                except ray.exceptions.RayError as error:  # the worker died, or the task could not run
                    outcomes[i] = RunFailed.from_exception(error)
                if isinstance(outcomes[i], RunFailed):
                    log(f"  {tasks[i].label} failed: {outcomes[i].error}")
            return outcomes
        finally:
            if started:
                ray.shutdown()

    return execute
