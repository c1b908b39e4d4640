"""The accuracy matrix of a continual run and the forgetting read from it.

Row ``i`` is the evaluation after training experience ``i``, column ``j`` the test
experience; cells never measured are NaN. The W&B logger fills one, the comparison
runner computes its forgetting with the same function, so both report one number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no backend or global figure state involved


@dataclass
class AccuracyMatrix:
    """Accuracy after training experience ``i`` (row) on test experience ``j`` (column); NaN where not measured."""

    values: Dict[int, Dict[int, float]] = field(default_factory=dict)

    def set(self, row: int, col: int, value: float) -> None:
        self.values.setdefault(row, {})[col] = float(value)

    def array(self, n_cols: Optional[int] = None) -> np.ndarray:
        if not self.values:
            return np.zeros((0, n_cols or 0))
        rows = max(self.values) + 1
        cols = n_cols or 1 + max(c for r in self.values.values() for c in r)
        out = np.full((rows, cols), np.nan)
        for r, row in self.values.items():
            for c, v in row.items():
                if c < cols:
                    out[r, c] = v
        return out


def forgetting_from_matrix(matrix: np.ndarray) -> float:
    """Mean over experiences ``j`` before the last row of ``max_{j<=i<last} A[i, j] - A[last, j]``."""
    if matrix.shape[0] < 2:
        return float("nan")
    last = matrix.shape[0] - 1
    drops = []
    for j in range(min(last, matrix.shape[1])):
        earlier = matrix[j:last, j]
        earlier = earlier[~np.isnan(earlier)]
        if earlier.size and not np.isnan(matrix[last, j]):
            drops.append(float(earlier.max() - matrix[last, j]))
    return float(np.mean(drops)) if drops else float("nan")


def accuracy_matrix_figure(matrices: Mapping[str, np.ndarray], title: str = ""):
    """A matplotlib figure with one annotated heatmap per matrix (e.g. ``{"TAg": A, "TAw": B}``)."""
    n = len(matrices)
    fig = Figure(figsize=(4.2 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, m) in zip(axes, matrices.items()):
        image = ax.imshow(np.ma.masked_invalid(m), vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"{name} accuracy")
        ax.set_xlabel("test experience j")
        ax.set_ylabel("after training experience i")
        ax.set_xticks(range(m.shape[1]))
        ax.set_yticks(range(m.shape[0]))
        if m.size <= 400:
            for (i, j), v in np.ndenumerate(m):
                if not np.isnan(v):
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 0.6 else "black")
        fig.colorbar(image, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
