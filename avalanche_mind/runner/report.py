"""Results of a comparison run: derived figures, the notes, JSON, CSV, a Markdown table and PNG plots.

Accuracy matrices are ``rows x columns`` = ``after training experience i x test
experience j`` (Joint training has a single row: after training on everything).
Accuracies are fractions in [0, 1] in the JSON/CSV and percentages in the table.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib
import numpy as np

from avalanche_mind.io.files import atomic_write_text
from avalanche_mind.logging.accuracy_matrix import forgetting_from_matrix
from avalanche_mind.runner.presets import Preset
from avalanche_mind.runner.validation import VALIDATION_FRACTION

Matrix = List[List[Optional[float]]]

#: Scalar figures of one run, in table order: (key, column title, format).
SCALARS = (
    ("tag", "TAg acc %", "pct"),
    ("taw", "TAw acc %", "pct"),
    ("forgetting_tag", "Forgetting TAg (pts)", "pct"),
    ("forgetting_taw", "Forgetting TAw (pts)", "pct"),
    ("taskid", "TaskId acc %", "pct"),
    ("params_kept", "Params kept", "int"),
    ("state_mb", "Other state (MB)", "mb"),
    ("peak_rss_mb", "Peak RSS +MB", "mb"),
    ("train_time_s", "Train s", "s"),
    ("eval_time_s", "Eval s", "s"),
)


# ---------------------------------------------------------------- figures
def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def final_accuracy(matrix: Matrix) -> Optional[float]:
    """Mean over test experiences of the last row (the usual 'average accuracy')."""
    return _mean(matrix[-1]) if matrix else None


def seen_curve(matrix: Matrix, trained_rows: Sequence[int]) -> List[Optional[float]]:
    """After each training experience ``i``: mean accuracy over test experiences ``0..i``.

    ``trained_rows[r]`` is how many experiences had been trained when row ``r`` was
    measured (``i + 1``; Joint: all of them). Test experiences beyond the training
    stream's length (e.g. a single test experience) are all counted.
    """
    return [_mean(row[: max(1, n)]) for row, n in zip(matrix, trained_rows)]


def forgetting(matrix: Matrix) -> Optional[float]:
    """Average forgetting (Chaudhry et al. 2018) of a matrix with None for undefined cells.

    :func:`avalanche_mind.logging.accuracy_matrix.forgetting_from_matrix` (the one the W&B
    logger reports) on the same cells, so the runner and the logger agree.
    """
    if len(matrix) < 2:
        return None
    cells = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    value = forgetting_from_matrix(cells)
    return None if np.isnan(value) else value


def aggregate(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Optional[float]]]:
    """Mean and (sample) standard deviation over seeds of every scalar figure."""
    mean, std = {}, {}
    for key, _, _ in SCALARS:
        values = [r[key] for r in runs if r.get(key) is not None]
        mean[key] = sum(values) / len(values) if values else None
        std[key] = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "std": std}


def mean_matrix(matrices: Sequence[Matrix]) -> Matrix:
    """Element-wise mean over seeds (None where a cell is undefined)."""
    rows, cols = len(matrices[0]), len(matrices[0][0])
    return [[_mean([m[i][j] for m in matrices]) for j in range(cols)] for i in range(rows)]


def evaluated_on_validation(result: Dict[str, Any]) -> bool:
    """Whether a run was scored on the validation split (``compare --validation``) instead of the test stream."""
    return result.get("evaluated_on") == "validation split"


# ---------------------------------------------------------------- notes
def run_notes(preset: Preset, stream: Dict[str, Any], result: Dict[str, Any]) -> List[str]:
    """How the table was produced: budget, backbone and normalisation, PackNet's setup, what each figure means."""
    strategies = result["strategies"]
    notes = [preset.budget_note()]
    if evaluated_on_validation(result):
        notes.insert(0, f"Evaluated on the validation split, not the test stream: every training experience minus "
                        f"{VALIDATION_FRACTION:.0%} of each class for training, that {VALIDATION_FRACTION:.0%} for "
                        "evaluation (the split --tune uses).")
    norms = {entry["label"]: entry["normalisation"] for entry in strategies.values()}
    notes.append(
        "Backbone: the same network for every strategy ("
        + f"{preset.model} {dict(preset.model_kwargs)}); normalisation per strategy: "
        + "; ".join(f"{k}: {v}" for k, v in norms.items())
        + ". PackNet uses GroupNorm(affine=False) in place of BatchNorm because Avalanche 0.6.0's "
        "PackNetModel.wrap refuses modules with running statistics (and any norm with its own affine "
        "parameters, which would be shared across tasks unprotected)."
    )
    if "packnet" in strategies:
        notes.append(
            "PackNet is Avalanche's PackNetModel + PackNetPlugin on a SupervisedTemplate (the PackNet "
            "wrapper nests user plugins in a list, silently skipping them); prune proportions "
            "1 - 1/(T - i) give every experience 1/T of each layer, like MIND's 'equal' capacity; "
            + ("the classifier is multi-head (each task trains its own classes' rows, not pruned). "
               if stream["scenario"] == "class" else "the classifier is pruned like every other layer. ")
            + f"PackNet's TAg uses MIND's task inference (avalanche_mind.inference.bank.predict): every task's "
            f"mask on every input, max softmax of its output slice at temperature {preset.temperature}."
        )
    notes.append(
        "TAw for single-head strategies (Naive, LwF, EWC, SI, Joint) is the argmax restricted to the evaluated "
        "experience's classes" + (" (the same as TAg here: every experience has every class)."
                                  if stream["scenario"] == "domain" else ".")
        + " TaskId (task-identification accuracy) exists only for MIND and PackNet."
    )
    notes.append(
        "Accuracy: mean over test experiences after the last experience. Forgetting: mean over old "
        "experiences of (best earlier accuracy - final accuracy), in points. Params kept: peak number of "
        "parameters held (model + teacher / old-model copies). Other state: peak bytes of non-parameter "
        "tensors held (BN statistics and snapshots, ownership maps, PackNet masks, recorded teacher "
        "logits, weight-guard copies). Peak RSS: sampled process memory above its level at the "
        "strategy's start."
    )
    if stream["scenario"] == "domain":
        notes.append(f"Domain-incremental: every experience has the same {stream['num_classes']} classes; "
                     "MIND's and PackNet's output slice is the whole classifier.")
    notes.extend(preset.notes)
    return notes


# ---------------------------------------------------------------- writers
def aggregate_rules(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """Per task-inference rule: mean and std over seeds of the final TAg/TAw/TaskId."""
    rules = runs[0].get("rules") or {}
    return {rule: aggregate([r["rules"][rule] for r in runs]) for rule in rules}


def rules_table(result: Dict[str, Any]) -> str:
    """The same trained models under each task-inference rule (``--rules``), or '' without it."""
    lines = []
    for entry in result["strategies"].values():
        for rule, stats in (entry.get("rules") or {}).items():
            mean, std = stats["mean"], stats["std"]
            cells = [entry["label"], rule] + [_fmt(mean[k], "pct", std[k]) for k in ("tag", "taw", "taskid")]
            lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = "\n| Strategy | Task inference | TAg | TAw | TaskId |\n|---|---|---|---|---|\n"
    return head + "\n".join(lines) + "\n"


def _fmt(value: Optional[float], kind: str, std: Optional[float] = None) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        text, spread = f"{100 * value:.1f}", (f" ± {100 * std:.1f}" if std is not None else "")
    elif kind == "int":
        text, spread = f"{value / 1e6:.3f}M" if value >= 1e5 else f"{int(round(value))}", ""
    elif kind == "mb":
        text, spread = f"{value:.1f}", (f" ± {std:.1f}" if std is not None else "")
    else:
        text, spread = f"{value:.1f}", (f" ± {std:.1f}" if std is not None else "")
    return text + spread


def markdown_table(result: Dict[str, Any]) -> str:
    """The comparison table plus the notes that say how it was produced."""
    seeds = result["seeds"]
    head = f"### {result['preset']['description']}\n\n"
    head += (
        f"Benchmark `{result['benchmark']}` ({result['scenario']}-incremental, "
        f"{result['n_experiences']} experiences, {result['num_classes']} classes), "
        + ("evaluated on the validation split (not the test stream), " if evaluated_on_validation(result) else "")
        + f"seeds {seeds}, device {result['device']}; mean"
        + (" ± std over seeds" if len(seeds) > 1 else "")
        + f". Total wall time {result['total_time_s']:.0f} s.\n\n"
    )
    cols = ["Strategy"] + [title for _, title, _ in SCALARS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, entry in result["strategies"].items():
        mean, std = entry["mean"], entry["std"]
        cells = [entry["label"]] + [_fmt(mean[k], kind, std[k]) for k, _, kind in SCALARS]
        lines.append("| " + " | ".join(cells) + " |")
    notes = "\n".join(f"- {n}" for n in result["notes"])
    return head + "\n".join(lines) + "\n" + rules_table(result) + "\nNotes:\n" + notes + "\n"


def write_json(result: Dict[str, Any], path: Path) -> None:
    def clean(obj):
        if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
            return None
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        return obj

    atomic_write_text(path, json.dumps(clean(result), indent=2) + "\n")


def write_csv(result: Dict[str, Any], path: Path) -> None:
    keys = [k for k, _, _ in SCALARS]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["strategy", "seed"] + keys)
        for name, entry in result["strategies"].items():
            for run in entry["runs"]:
                writer.writerow([name, run["seed"]] + ["" if run.get(k) is None else run[k] for k in keys])


# ---------------------------------------------------------------- plots
def _pyplot():
    """pyplot on the Agg backend (files only, no display), chosen when the first plot is drawn."""
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _spread(curves: Sequence[Sequence[Optional[float]]]) -> List[Optional[float]]:
    """Sample standard deviation over seeds at each point of the curves (None where undefined or one seed)."""
    return [statistics.stdev(x) if len(x) > 1 and None not in x else None for x in zip(*curves)]


def plot_curves(result: Dict[str, Any], path: Path) -> None:
    """Accuracy over the experiences seen so far, after each training experience, for every strategy.

    The line is the mean over seeds; with several seeds a band shows mean ± one
    (sample) standard deviation, so a reader sees which gaps are larger than the
    seed-to-seed spread.
    """
    plt = _pyplot()
    T = result["n_experiences"]
    seeds = len(result["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, key, title in ((axes[0], "curve_tag", "task-agnostic (TAg)"), (axes[1], "curve_taw", "task-aware (TAw)")):
        for name, entry in result["strategies"].items():
            xs = entry["curves"]["trained"]
            ys = [None if v is None else 100 * v for v in entry["curves"][key]]
            spread = _spread([run[key] for run in entry["runs"]])
            if len(xs) == 1:  # Joint: one point after all data, drawn as a reference line
                if ys[0] is not None:
                    ax.axhline(ys[0], linestyle="--", color="grey", linewidth=1)
                    ax.plot(xs, ys, "s", color="grey", label=entry["label"])
                continue
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=entry["label"])
            band = [(x, y, 100 * sd) for x, y, sd in zip(xs, ys, spread) if y is not None and sd is not None]
            if band:
                bx, by, bsd = (np.array(v) for v in zip(*band))
                ax.fill_between(bx, by - bsd, by + bsd, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_title(f"Accuracy on experiences seen so far, {title}")
        ax.set_xlabel("experiences trained")
        ax.set_xticks(range(1, T + 1))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ""))
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(result["preset"]["description"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(matrix: Matrix, title: str, path: Path, row_labels: Sequence[str]) -> None:
    """TAg accuracy matrix: rows after training experience i, columns test experience j."""
    plt = _pyplot()
    data = np.array([[np.nan if v is None else 100 * v for v in row] for row in matrix], dtype=float)
    rows, cols = data.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * cols, 1.2 + 0.45 * rows))
    image = ax.imshow(data, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                if not np.isnan(data[i, j]):
                    ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] < 60 else "black")
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_yticklabels(row_labels)
    ax.set_xlabel("test experience")
    ax.set_ylabel("after training experience")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="TAg accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(result: Dict[str, Any], out: Path) -> Dict[str, str]:
    """Write every output of a run under ``out``; returns {kind: path}.

    results.json first (the plots and tables can be drawn again from it with ``--redraw``),
    each file through a temporary name, so a full disk leaves whole files only.
    """
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "csv": out / "results.csv", "markdown": out / "results.md",
             "curves": out / "accuracy_curves.png"}
    result["files"] = {k: str(v) for k, v in files.items()}
    heatmaps = {name: out / f"heatmap_{name}.png" for name in result["strategies"]}
    result["files"].update({f"heatmap_{k}": str(v) for k, v in heatmaps.items()})
    write_json(result, files["json"])
    try:
        atomic_write_text(files["markdown"], markdown_table(result))
        with _replaced(files["csv"]) as tmp:
            write_csv(result, tmp)
        for name, entry in result["strategies"].items():
            labels = [str(n - 1) if n < result["n_experiences"] or len(entry["curves"]["trained"]) > 1 else "all"
                      for n in entry["curves"]["trained"]]
            with _replaced(heatmaps[name]) as tmp:
                plot_heatmap(entry["tag_matrix_mean"], f"{entry['label']}: TAg accuracy (%)", tmp, labels)
        with _replaced(files["curves"]) as tmp:
            plot_curves(result, tmp)
    except OSError as error:
        raise PartlyWritten(error.errno, error.strerror or str(error), error.filename) from error
    return result["files"]


class PartlyWritten(OSError):
    """results.json is written, a table or plot after it is not: ``--redraw`` draws them from it."""


@contextlib.contextmanager
def _replaced(path: Path):
    """A temporary path beside ``path`` (same suffix) that replaces it once written."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
