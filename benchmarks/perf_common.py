"""What every section of ``benchmarks/perf.py`` shares.

The machine record, interleaved timing rounds and their ratios, Markdown tables,
and the measured model: a ResNet-32 whose ownership map holds T random
sub-networks, with its dense (not gated) twin.
"""
from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from avalanche_mind import OwnershipMap, gresnet32
from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.models.gresnet import ResNet
from avalanche_mind.core.snapshots import experience_state


# ------------------------------------------------------------------ records
def cpu_model() -> str:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def machine() -> Dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------- timing
def rounds(variants: Dict[str, Callable[[], Any]], repeats: int, warmup: bool = True) -> Dict[str, List[float]]:
    """Seconds per call of each variant, ``repeats`` interleaved rounds."""
    if warmup:
        for fn in variants.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(num: List[float], den: List[float], scale: float = 1.0) -> float:
    """Median over rounds of the within-round ratio ``num / (scale * den)``."""
    return statistics.median(a / (scale * b) for a, b in zip(num, den))


# ------------------------------------------------------------------- tables
def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------- a model with T tasks
def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Random statistics and affine terms in every BatchNorm, standing in for trained ones."""
    for _, bn in batchnorm_modules(model):
        c = bn.num_features
        bn.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=generator))
        bn.weight.copy_(0.5 + torch.rand(c, generator=generator))
        bn.bias.copy_(0.1 * torch.randn(c, generator=generator))


def model_with_tasks(
    n_tasks: int, num_classes: int = 100, seed: int = 0, capacity: Any = "equal"
) -> Tuple[nn.Module, OwnershipMap, List[Dict[str, Tensor]], List[Tensor]]:
    """gresnet32 whose ownership map holds ``n_tasks`` random sub-networks.

    No training: allocation as MIND does it (random rule), and every task gets
    its own BatchNorm statistics and affine terms (random, standing in for trained
    ones), snapshotted as the BatchNorm plugin does.
    """
    torch.manual_seed(seed)
    model = gresnet32(num_classes)
    ownership = OwnershipMap(model, n_tasks, capacity)
    generator = torch.Generator().manual_seed(seed)
    per = max(num_classes // n_tasks, 1)
    snapshots, slices = [], []
    with torch.no_grad():
        for task in range(n_tasks):
            classes = [c % num_classes for c in range(task * per, (task + 1) * per)]
            ownership.allocate(task, classes, generator=generator)
            randomise_batchnorm(model, generator)
            snapshots.append(experience_state(model))
            slices.append(torch.tensor(sorted(set(classes))))
    return model.eval(), ownership, snapshots, slices


def dense_twin(model: nn.Module, num_classes: int = 100) -> nn.Module:
    """The same ResNet-32, not gated: the "plain forward pass" of the ratios."""
    dense = ResNet(num_classes)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(".owner")}
    dense.load_state_dict(state)
    return dense.eval()
