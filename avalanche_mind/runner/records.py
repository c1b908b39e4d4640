"""Each finished (strategy, seed) run of a comparison, kept under ``--out/runs/`` the moment it finishes.

A killed comparison loses only the runs in progress: rerunning it with the same
``--out`` (or ``--resume-from``) reads the recorded runs back and trains the others.
A record holds the settings that decide its figures (preset, device, threads, rules,
split), so a run recorded under other settings is never mixed in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Tuple

from avalanche_mind.io.files import atomic_write_text

RUNS = "runs"


class RecordMismatch(ValueError):
    """``--out`` holds runs of a comparison made with other settings."""


def record_path(out: Path, name: str, seed: int) -> Path:
    return Path(out) / RUNS / f"{name}-seed{seed}.json"


def save_run(out: Path, name: str, seed: int, settings: Dict[str, Any], run: Dict[str, Any]) -> Path:
    """Record one finished run (atomically)."""
    path = record_path(out, name, seed)
    atomic_write_text(path, json.dumps({"strategy": name, "seed": seed, "settings": settings, "run": run},
                                       indent=1) + "\n")
    return path


def recorded_runs(out: Path, settings: Dict[str, Any],
                  wanted: Iterable[Tuple[str, int]]) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """The recorded runs among ``wanted``; :class:`RecordMismatch` if one was made with other ``settings``.

    An unreadable record (a kill cannot leave one, a hand edit can) is run again.
    """
    found: Dict[Tuple[str, int], Dict[str, Any]] = {}
    normal = json.loads(json.dumps(settings))  # tuples as lists, as read back
    for name, seed in wanted:
        path = record_path(out, name, seed)
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
            run, theirs = record["run"], record["settings"]
            if not isinstance(run, dict) or run.get("seed") != seed:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if theirs != normal:
            differ = sorted(k for k in set(theirs) | set(normal) if theirs.get(k) != normal.get(k))
            raise RecordMismatch(
                f"{Path(out)} holds runs of a comparison with other settings ({', '.join(differ)} differ, "
                f"e.g. {path.name}): rerun it with its own options to continue it, or choose another --out")
        found[(name, seed)] = run
    return found


def run_unrecorded(tasks: List[Any], execute: Callable[..., List[Any]], out: Path, settings: Dict[str, Any],
                   log: Callable[[str], None]) -> Tuple[List[Any], int]:
    """Every task's outcome, in order: the recorded ones read back, the others run by ``execute`` and each
    recorded as it finishes (a failed run, not a dict, is not: a rerun tries it again); and how many were read."""
    known = recorded_runs(out, settings, [(t.name, t.seed) for t in tasks])
    if known:
        log(f"  {len(known)} of {len(tasks)} runs already recorded in {Path(out) / RUNS}: not run again (remove "
            "that folder to run them again)")
    todo = [t for t in tasks if (t.name, t.seed) not in known]

    def done(i: int, outcome: Any) -> None:
        if isinstance(outcome, dict):
            try:
                save_run(out, todo[i].name, todo[i].seed, settings, outcome)
            except OSError as error:  # a full disk: the figures are still here for the final write
                log(f"  could not record {todo[i].label} in {Path(out) / RUNS} ({error.strerror or error}); "
                    "the comparison goes on, but a rerun would train it again")

    ran = dict(zip(((t.name, t.seed) for t in todo), execute(todo, log, done=done) if todo else []))
    return [known[(t.name, t.seed)] if (t.name, t.seed) in known else ran[(t.name, t.seed)] for t in tasks], len(known)


__all__ = ["RUNS", "run_unrecorded", "RecordMismatch", "record_path", "recorded_runs", "save_run"]
