"""Each finished (strategy, seed) run of a comparison, kept under ``--out/runs/`` the moment it finishes.

A killed comparison loses only the runs in progress: rerunning it with the same
``--out`` (or ``--resume-from``) reads the recorded runs back and trains the others.
A record holds the settings that decide its figures (preset, device, threads, rules,
split), so a run recorded under other settings is never mixed in.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

RUNS = "runs"


class RecordMismatch(ValueError):
    """``--out`` holds runs of a comparison made with other settings."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and rename: a kill leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


__all__ = ["RUNS", "RecordMismatch", "atomic_write_text", "record_path", "recorded_runs", "save_run"]
