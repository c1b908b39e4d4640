"""Many runs at once: the runner's (strategy, seed) tasks in worker processes (``--jobs``) or as Ray tasks (``--ray``).

Every task is seeded at its start, runs under the same thread count and keeps its
evaluations off the training random state (:mod:`avalanche_mind.runner.reproducible`),
so where a task runs changes no figure, only the wall time. Outcomes come back in the
tasks' order; a task that raises (or whose process dies) comes back as
:class:`~avalanche_mind.runner.loop.RunFailed` with its error, and the others run on.
Tasks are plain values (:class:`~avalanche_mind.runner.loop.RunTask`); each task gets
its own process, so one that dies fails only its task, and workers die with the
comparison. Each builds its own W&B logger; a forked one inherits the loaded benchmark.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import multiprocessing
import os
import platform
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Callable, List, Optional, Sequence

import torch

from avalanche_mind.runner.loop import Done, Executor, Outcome, RunFailed, RunTask, run_task

RAY_MISSING = "--ray needs Ray, an optional extra: pip install -e '.[ray]'"

def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def check_ray_address(address: Optional[str], timeout: float = 5.0) -> None:
    """ValueError, in seconds, for a malformed ``--ray`` address or one where nothing answers (Ray would wait on)."""
    if not address or address == "auto":
        return
    scheme, _, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "ray") or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise ValueError(f"--ray {address!r} is not a Ray address: give ray://HOST:PORT (Ray Client), HOST:PORT, "
                         "or no address for a local Ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise ValueError(f"--ray {address}: nothing answers at {host}:{port} ({error.strerror or error}); start "
                         "the Ray cluster or correct the address (no address: a local Ray)") from None


def _die_with_parent(parent: int) -> None:
    """End this worker when the comparison that started it dies (even by SIGKILL): no orphan keeps training."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # elsewhere (and as a fallback): notice the new parent
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _worker(task: RunTask, conn, threads: Optional[int], parent: int) -> None:
    """One task in its own process: progress lines, then the outcome, through ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends the workers
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent around the start
    _die_with_parent(parent)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        outcome: Outcome = run_task(task, lambda line: conn.send(("line", line)))
    except Exception as error:  # noqa: BLE001 - the parent reports it; an exception may not pickle, text does
        outcome = RunFailed.from_exception(error)
    conn.send(("outcome", outcome))
    conn.close()


def _context(device: str) -> multiprocessing.context.BaseContext:
    """fork on Linux for CPU runs, spawn elsewhere and for a GPU (CUDA cannot be used in a forked child).

    Forked workers start at once with this process's state: the loaded benchmark, and
    strategies, benchmarks or patches that a script or a test added at run time, which a
    spawned worker would not see. This process starts no thread, so forking is safe.
    """
    if platform.system() == "Linux" and str(device) == "cpu":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _death(process) -> str:
    process.join(5)
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"WorkerDied: its process was killed by {name} (out of memory, or killed by hand)"
    return f"WorkerDied: its process ended (exit status {code}) before sending its results"


@contextlib.contextmanager
def _no_sigint():
    """Hold Ctrl-C while a worker is forked: it reaches this process after, never a half-started child."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def in_processes(jobs: int, threads: Optional[int]) -> Executor:
    """Run the tasks in up to ``jobs`` processes of ``threads`` torch threads each, one process per task.

    A process that dies (killed, out of memory) fails its own task only; Ctrl-C or any
    error here ends every worker at once.
    """

    def execute(tasks: Sequence[RunTask], log: Callable[[str], None], done: Optional[Done] = None) -> List[Outcome]:
        context = _context(tasks[0].device) if tasks else None
        outcomes: List[Outcome] = [RunFailed("not run")] * len(tasks)
        waiting = list(range(len(tasks)))
        running = {}  # task index -> (process, connection)
        try:
            while waiting or running:
                while waiting and len(running) < max(1, jobs):
                    i = waiting.pop(0)
                    reader, writer = context.Pipe(duplex=False)
                    process = context.Process(target=_worker, args=(tasks[i], writer, threads, os.getpid()),
                                              name=f"compare {tasks[i].label}", daemon=True)
                    with _no_sigint():
                        process.start()
                        running[i] = (process, reader)
                    writer.close()
                ready = wait([c for _, c in running.values()] + [p.sentinel for p, _ in running.values()])
                for i, (process, reader) in list(running.items()):
                    if reader not in ready and process.sentinel not in ready:
                        continue
                    finished = None
                    try:
                        while finished is None and reader.poll():
                            kind, value = reader.recv()
                            if kind == "line":
                                log(value)
                            else:
                                finished = value
                    except (EOFError, OSError):
                        finished = RunFailed(_death(process))
                    if finished is None and not process.is_alive():
                        finished = RunFailed(_death(process))
                    if finished is None:
                        continue
                    outcomes[i] = finished
                    process.join()
                    reader.close()
                    del running[i]
                    if isinstance(finished, RunFailed):
                        log(f"  {tasks[i].label} failed: {finished.error}")
                    if done is not None:
                        done(i, finished)
        finally:
            for process, reader in running.values():  # Ctrl-C or an error here: no worker outlives it
                process.kill()
            for process, reader in running.values():
                process.join()
                reader.close()
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

    def execute(tasks: Sequence[RunTask], log: Callable[[str], None], done: Optional[Done] = None) -> List[Outcome]:
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
                ready, pending = ray.wait(pending, num_returns=1)
                i = refs[ready[0]]
                try:
                    outcomes[i] = ray.get(ready[0])
                except ray.exceptions.RayError as error:  # the worker died, or the task could not run
                    outcomes[i] = RunFailed.from_exception(error)
                if isinstance(outcomes[i], RunFailed):
                    log(f"  {tasks[i].label} failed: {outcomes[i].error}")
                if done is not None:
                    done(i, outcomes[i])
            return outcomes
        finally:
            if started:
                ray.shutdown()

    return execute
