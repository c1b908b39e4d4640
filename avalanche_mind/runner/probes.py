"""What the comparison measures besides accuracy: per-experience metric rows, held tensors, peak memory.

The probes watch a strategy without changing it: the metric row is an Avalanche
logger, the resource probe a plugin that only reads, and the memory sampler a
thread outside the training loop.
"""
from __future__ import annotations

import gc
import re
import threading
from typing import Any, Dict, Tuple

import psutil
import torch
from avalanche.core import SupervisedPlugin
from avalanche.logging import BaseLogger
from torch import nn

_METRIC = re.compile(r"^Top1_(TAg|TAw|TaskId)_Acc_Exp/eval_phase/test_stream/Task\d+/Exp(\d+)$")


class MetricRow(BaseLogger):
    """Keeps the per-experience TAg/TAw/TaskId values emitted by the last ``eval``."""

    def __init__(self) -> None:
        super().__init__()
        self.values: Dict[str, Dict[int, float]] = {}

    def reset(self) -> None:
        self.values = {"TAg": {}, "TAw": {}, "TaskId": {}}

    def log_single_metric(self, name, value, x_plot) -> None:
        match = _METRIC.match(name)
        if match:
            self.values[match.group(1)][int(match.group(2))] = float(value)


class ResourceProbe(SupervisedPlugin):
    """Peak parameters (model + every module a plugin holds, e.g. a teacher or LwF's old
    model) and other tensor state (buffers, ownership maps, BN snapshots, recorded
    logits, weight copies), sampled while each experience trains."""

    def __init__(self) -> None:
        super().__init__()
        self.params_kept = 0
        self.state_bytes = 0

    def _sample(self, strategy) -> None:
        params, state = held_tensors(strategy)
        self.params_kept = max(self.params_kept, params)
        self.state_bytes = max(self.state_bytes, state)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        if strategy.clock.train_exp_iterations == 0:
            self._sample(strategy)

    def after_training_epoch(self, strategy, **kwargs) -> None:
        self._sample(strategy)


def held_tensors(strategy) -> Tuple[int, int]:
    """(parameter count, bytes of other tensors) held by the strategy's model and plugins.

    Walks the model, MIND's state and every plugin except the evaluator, descending
    into Avalanche/avalanche_mind objects, containers and modules (not the
    optimiser, whose moments every strategy has alike). Shared tensors count once.
    """
    params: Dict[int, int] = {}
    other: Dict[int, int] = {}
    seen = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, nn.Parameter):
            params[id(obj)] = obj.numel()
        elif isinstance(obj, torch.Tensor):
            other.setdefault(id(obj), obj.numel() * obj.element_size())
        elif isinstance(obj, nn.Module):
            for p in obj.parameters():
                params[id(p)] = p.numel()
            for b in obj.buffers():
                other.setdefault(id(b), b.numel() * b.element_size())
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v, depth + 1)
        elif type(obj).__module__.split(".")[0] in ("avalanche", "avalanche_mind") and hasattr(obj, "__dict__"):
            if obj is strategy or obj is getattr(strategy, "evaluator", None):
                return
            for v in vars(obj).values():
                visit(v, depth + 1)

    visit(strategy.model, 0)
    visit(getattr(strategy, "state", None), 0)
    for plugin in strategy.plugins:
        visit(plugin, 0)
    return sum(params.values()), sum(other.values())


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 20 ms in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20
