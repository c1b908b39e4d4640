"""Each baseline's own hyperparameters, chosen on a validation split of the training data, never on the test stream.

For a preset, every training experience is split, class by class and seeded, into
a training part and a validation part (:mod:`avalanche_mind.runner.validation`).
Each point of a baseline's grid trains the baseline on the training parts with the
comparison's own code and budget (:func:`avalanche_mind.runner.loop.run_strategy`,
the preset's epochs and schedule) and is scored by its final TAg accuracy on the
validation parts: the mean over experiences after the last one, as the comparison
scores the test stream. The best point wins; a tie goes to the earlier point of
the grid. The points' runs go to the comparison's executor (``--jobs``, ``--ray``),
with the same scores wherever they run.

``compare --tune`` runs the search and writes its record, ``<preset>.json`` in
``benchmarks/tuning/`` (every point's score, the grid, the date and the commit);
the preset in :mod:`avalanche_mind.runner.presets` holds the chosen values, and a
test checks that they are the record's.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from avalanche_mind.runner.loop import Executor, RunFailed, RunTask, loaded, run_serial
from avalanche_mind.runner.names import TUNED
from avalanche_mind.runner.presets import Preset
from avalanche_mind.runner.validation import SPLIT_SEED, VALIDATION_FRACTION
from avalanche_mind.settings import check_names

RECORDS = Path(__file__).resolve().parents[2] / "benchmarks" / "tuning"
"""Where ``compare --tune`` writes ``<preset>.json`` by default (the repository's ``benchmarks/tuning``)."""

Grid = Dict[str, Tuple[Any, ...]]
"""Preset field -> the values searched; the points are every combination, in order."""


def _packnet_grid(preset: Preset) -> Grid:
    """Half, the same and twice the baselines' learning rate; a quarter, half or three quarters of the
    epochs after the pruning (the total stays the preset's budget)."""
    epochs = preset.baseline_epochs
    post = sorted({min(max(round(epochs * share), 1), epochs - 1) for share in (0.25, 0.5, 0.75)})
    lr = preset.teacher_lr
    return {"packnet_lr": (lr / 2, lr, lr * 2), "packnet_post_prune_epochs": tuple(post)}


GRIDS: Mapping[str, Callable[[Preset], Grid]] = {
    "lwf": lambda preset: {"lwf_alpha": (1.0, 4.0, 16.0), "lwf_temperature": (1.0, 2.0)},
    # Decades around the lambda at which the penalty of an untethered experience's drift
    # matches the cross-entropy (about 1e4 for EWC's Fisher here; SI's importances sit at
    # the plugin's clip, 0.001, which puts it near 1-10).
    "ewc": lambda preset: {"ewc_lambda": (1e2, 1e3, 1e4, 1e5, 1e6)},
    "si": lambda preset: {"si_lambda": (0.1, 1.0, 10.0, 100.0, 1000.0)},
    "packnet": _packnet_grid,
}
"""The baselines with hyperparameters of their own, and the grid searched for each on a preset."""
check_names("runner.tuning.GRIDS", GRIDS, TUNED)  # the help lists runner.names.TUNED


# ------------------------------------------------------------------ the search
def grid_points(grid: Grid) -> List[Dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def _commit() -> Optional[str]:
    """The repository's commit, with ``-dirty`` when tracked files other than the records differ from it;
    None outside a clone."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":!{RECORDS.relative_to(root)}"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


class SearchFailed(RuntimeError):
    """A point of a search could not be trained; its message holds the run's error and traceback."""


def search_baseline(name: str, grid: Grid, base: RunTask, seeds: Sequence[int], log: Callable[[str], None],
                    execute: Executor = run_serial) -> Dict[str, Any]:
    """Every point of ``grid`` for baseline ``name``, scored on the validation split; the record of the search.

    ``base`` names the preset, data and device; each (point, seed) is one run of the
    runner, given to ``execute`` all at once (one after another, or ``--jobs``/``--ray``:
    each run is seeded at its start, so the scores do not depend on where it ran).
    """
    values_of = grid_points(grid)
    tasks = [dataclasses.replace(base, name=name, seed=seed, validation=True,
                                 preset=dataclasses.replace(base.preset, **values))
             for values in values_of for seed in seeds]
    outcomes = execute(tasks, log)
    for task, outcome in zip(tasks, outcomes):
        if isinstance(outcome, RunFailed):
            raise SearchFailed(f"--tune {name}: the run {task.label} failed: {outcome.error}\n{outcome.traceback}")
    points = []
    for i, values in enumerate(values_of):
        runs = outcomes[i * len(seeds):(i + 1) * len(seeds)]
        scores = [run["tag"] for run in runs]
        score = sum(scores) / len(scores)
        points.append({"values": values, "validation_tag": score, "per_seed": scores,
                       "wall_time_s": round(sum(run["wall_time_s"] for run in runs), 1)})
        log(f"[tune {name}] {values}: validation TAg {100 * score:.1f}%")
    best = max(points, key=lambda point: point["validation_tag"])  # max keeps the first of equals
    return {
        "grid": {field: list(values) for field, values in grid.items()},
        "points": points,
        "chosen": best["values"],
        "validation_tag": best["validation_tag"],
        "seeds": list(seeds),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
    }


def write_record(path: Path, preset: Preset, stream: Mapping[str, Any], name: str, entry: Dict[str, Any]) -> None:
    """Add ``name``'s search to the record at ``path`` (other baselines' searches are kept), atomically."""
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update({
        "preset": preset.name,
        "benchmark": preset.benchmark,
        "benchmark_kwargs": dict(preset.benchmark_kwargs),
        "validation": {"fraction": VALIDATION_FRACTION, "seed": SPLIT_SEED, "stratified": "by class",
                       "train_sizes": stream["train_sizes"], "validation_sizes": stream["test_sizes"]},
        "score": "final TAg accuracy on the validation split (mean over experiences after the last one)",
        "budget": preset.budget_note(),
    })
    record.setdefault("baselines", {})[name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)


def tune(preset: Preset, *, strategies: Sequence[str], seeds: Sequence[int], folder: Path,
         data_root: Optional[str], device: str, log: Callable[[str], None],
         grids: Optional[Mapping[str, Grid]] = None, execute: Executor = run_serial) -> Dict[str, Dict[str, Any]]:
    """Search each tunable baseline of ``strategies`` on ``preset``'s validation split; writes ``folder/<preset>.json``.

    ``grids``: a grid per baseline instead of :data:`GRIDS` (tests). ``execute`` runs
    each search's (point, seed) runs (``--jobs``, ``--ray``). FileNotFoundError (the
    data module's message) when the benchmark's data is missing; :class:`SearchFailed`
    when a run fails (the searches finished before it are recorded). Returns the search
    of each baseline, by name.
    """
    names = [name for name in strategies if name in GRIDS]
    if not names:
        raise ValueError(f"--tune searches {', '.join(GRIDS)}; none of them is among the strategies")
    skipped = [name for name in strategies if name not in GRIDS]
    if skipped:
        log(f"Not tuned (no hyperparameters of their own searched here): {', '.join(skipped)}")
    log(f"Loading benchmark {preset.benchmark} ...")
    _, stream = loaded(preset, data_root, validation=True)  # loaded here: forked workers inherit it
    log(f"  validation split: {VALIDATION_FRACTION:.0%} of each class; training parts {stream['train_sizes']}, "
        f"validation parts {stream['test_sizes']}")
    base = RunTask(name=names[0], seed=seeds[0], preset=preset, data_root=data_root, device=device, validation=True)
    path = Path(folder) / f"{preset.name}.json"
    searches = {}
    for name in names:
        grid = (grids or {}).get(name) or GRIDS[name](preset)
        searches[name] = search_baseline(name, grid, base, seeds, log, execute)
        write_record(path, preset, stream, name, searches[name])
        chosen = " ".join(f"{field}={value!r}" for field, value in searches[name]["chosen"].items())
        log(f"[tune {name}] chosen {chosen} (validation TAg {100 * searches[name]['validation_tag']:.1f}%); "
            f"set them in preset {preset.name!r} (runner/presets.py) to use them; recorded in {path}")
    return searches
