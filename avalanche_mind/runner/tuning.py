"""Each baseline's own hyperparameters, chosen on a validation split of the training data, never on the test stream.

For a preset, every training experience is split, class by class and seeded, into
a training part and a validation part (:data:`VALIDATION_FRACTION` of each class).
Each point of a baseline's grid trains the baseline on the training parts with the
comparison's own code and budget (:func:`avalanche_mind.runner.loop.run_strategy`,
the preset's epochs and schedule) and is scored by its final TAg accuracy on the
validation parts: the mean over experiences after the last one, as the comparison
scores the test stream. The best point wins; a tie goes to the earlier point of
the grid.

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
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from avalanche.benchmarks import benchmark_from_datasets, with_classes_timeline, with_task_labels

from avalanche_mind.data.registry import load_benchmark
from avalanche_mind.runner.loop import describe_stream, run_strategy
from avalanche_mind.runner.presets import Preset
from avalanche_mind.runner.strategies import STRATEGIES, RunContext

VALIDATION_FRACTION = 0.15
"""Share of each class of each training experience held out for validation."""
SPLIT_SEED = 0
"""Seed of the validation split (experience ``i`` uses ``SPLIT_SEED + i``); training seeds are separate."""
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


# ------------------------------------------------------------------ the validation split
def split_indices(targets: Sequence[int], fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """(training, validation) positions in ``targets``: ``fraction`` of each class, drawn with ``seed``.

    A class with two samples or more gives at least one to validation and keeps at least one.
    """
    generator = torch.Generator().manual_seed(seed)
    by_class: Dict[int, List[int]] = defaultdict(list)
    for position, target in enumerate(targets):
        by_class[int(target)].append(position)
    held = set()
    for positions in (by_class[c] for c in sorted(by_class)):
        n = len(positions)
        k = min(max(round(fraction * n), 1), n - 1) if n > 1 else 0
        held.update(positions[j] for j in torch.randperm(n, generator=generator)[:k].tolist())
    return [i for i in range(len(targets)) if i not in held], sorted(held)


def validation_benchmark(benchmark, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED):
    """The training stream, each experience split: a benchmark whose test stream is the validation split.

    The test stream of ``benchmark`` is never read. Each part keeps its experience's
    transforms (training augmentation, evaluation transform when evaluated).
    """
    train, validation = [], []
    for i, experience in enumerate(benchmark.train_stream):
        data = experience.dataset
        keep, held = split_indices(list(data.targets), fraction, seed + i)
        train.append(data.subset(keep))
        validation.append(data.subset(held))
    return with_task_labels(with_classes_timeline(benchmark_from_datasets(train=train, test=validation)))


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


def search_baseline(name: str, grid: Grid, base: RunContext, validation, seeds: Sequence[int],
                    log: Callable[[str], None]) -> Dict[str, Any]:
    """Every point of ``grid`` for baseline ``name``, scored on ``validation``; the record of the search."""
    points = []
    for values in grid_points(grid):
        start = time.perf_counter()
        ctx = dataclasses.replace(base, preset=dataclasses.replace(base.preset, **values))
        scores = [run_strategy(name, STRATEGIES[name], ctx, validation, seed, log)["tag"] for seed in seeds]
        score = sum(scores) / len(scores)
        points.append({"values": values, "validation_tag": score, "per_seed": scores,
                       "wall_time_s": round(time.perf_counter() - start, 1)})
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
         grids: Optional[Mapping[str, Grid]] = None) -> Dict[str, Dict[str, Any]]:
    """Search each tunable baseline of ``strategies`` on ``preset``'s validation split; writes ``folder/<preset>.json``.

    ``grids``: a grid per baseline instead of :data:`GRIDS` (tests). FileNotFoundError
    (the data module's message) when the benchmark's data is missing. Returns the
    search of each baseline, by name.
    """
    names = [name for name in strategies if name in GRIDS]
    if not names:
        raise ValueError(f"--tune searches {', '.join(GRIDS)}; none of them is among the strategies")
    skipped = [name for name in strategies if name not in GRIDS]
    if skipped:
        log(f"Not tuned (no hyperparameters of their own searched here): {', '.join(skipped)}")
    log(f"Loading benchmark {preset.benchmark} ...")
    benchmark = load_benchmark(preset.benchmark, data_root, **dict(preset.benchmark_kwargs))
    validation = validation_benchmark(benchmark)
    stream = describe_stream(validation)
    log(f"  validation split: {VALIDATION_FRACTION:.0%} of each class; training parts {stream['train_sizes']}, "
        f"validation parts {stream['test_sizes']}")
    base = RunContext(preset=preset, n_experiences=stream["n_experiences"], num_classes=stream["num_classes"],
                      in_channels=stream["in_channels"], scenario=stream["scenario"], device=device)
    path = Path(folder) / f"{preset.name}.json"
    searches = {}
    for name in names:
        grid = (grids or {}).get(name) or GRIDS[name](preset)
        searches[name] = search_baseline(name, grid, base, validation, seeds, log)
        write_record(path, preset, stream, name, searches[name])
        chosen = " ".join(f"{field}={value!r}" for field, value in searches[name]["chosen"].items())
        log(f"[tune {name}] chosen {chosen} (validation TAg {100 * searches[name]['validation_tag']:.1f}%); "
            f"set them in preset {preset.name!r} (runner/presets.py) to use them; recorded in {path}")
    return searches
