"""Small MIND runs and metric lookups shared by the tests (fixtures live in conftest.py)."""
from __future__ import annotations

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import MIND, mind_metrics, small_cnn

# Settings small enough for 2 CPU cores, large enough that the learning tests mean something.
FAST = dict(teacher_epochs=6, train_epochs=6, train_mb_size=32, eval_mb_size=256,
            lr=0.01, teacher_lr=0.01, milestones=[5], teacher_milestones=[5], temperature=1.0)


def quiet_evaluator() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True), *mind_metrics(), loggers=[])


def make_mind(n_classes=10, n_experiences=5, model=None, **overrides):
    torch.manual_seed(0)
    model = small_cnn(n_classes) if model is None else model
    kwargs = {**FAST, "evaluator": quiet_evaluator, **overrides}
    return MIND(model=model, n_experiences=n_experiences, seed=0, **kwargs)


def stream_metric(results: dict, prefix: str) -> float:
    """The single stream-level value whose name starts with ``prefix``."""
    values = [v for k, v in results.items() if k.startswith(prefix)]
    assert len(values) == 1, f"expected one metric starting with {prefix}, got {values}"
    return values[0]


def exp_metric(results: dict, prefix: str, exp: int) -> float:
    values = [v for k, v in results.items() if k.startswith(prefix) and k.endswith(f"Exp{exp:03d}")]
    assert len(values) == 1, f"expected one metric {prefix}..Exp{exp:03d}, got {values}"
    return values[0]
