"""Shared fixtures: small generated benchmarks and a MIND run trained once per session."""
from __future__ import annotations

import pytest
import torch

from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.data.toy import toy_class_incremental, toy_domain_incremental

# Settings small enough for 2 CPU cores, large enough that the learning tests mean something.
FAST = dict(teacher_epochs=6, train_epochs=6, train_mb_size=32, eval_mb_size=256,
            lr=0.01, teacher_lr=0.01, milestones=[5], teacher_milestones=[5], temperature=1.0)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread for the whole suite: two OpenMP threads on two shared cores spin
    against each other, and these small models gain nothing from a second one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def class_incremental():
    return toy_class_incremental(n_experiences=5, classes_per_experience=2, seed=0)


@pytest.fixture(scope="session")
def domain_incremental():
    return toy_domain_incremental(n_domains=3, n_classes=4, seed=0)


def quiet_evaluator() -> EvaluationPlugin:
    return EvaluationPlugin(accuracy_metrics(experience=True, stream=True), *mind_metrics(), loggers=[])


def make_mind(n_classes=10, n_experiences=5, model=None, **overrides):
    torch.manual_seed(0)
    model = small_cnn(n_classes) if model is None else model
    kwargs = {**FAST, "evaluator": quiet_evaluator, **overrides}
    return MIND(model=model, n_experiences=n_experiences, seed=0, **kwargs)


@pytest.fixture(scope="session")
def trained_run(class_incremental):
    """MIND trained on every experience; keeps experience 0's end state for isolation checks."""
    strategy = make_mind()
    stream = class_incremental.train_stream
    strategy.train(stream[0], eval_streams=[])
    after_first = {
        "weights": {k: v.clone() for k, v in strategy.model.state_dict().items()},
        "bn_snapshot": {k: v.clone() for k, v in strategy.state.bn_snapshots[0].items()},
        "results": strategy.eval(class_incremental.test_stream[0]),
    }
    for experience in stream[1:]:
        strategy.train(experience, eval_streams=[])
    return strategy, after_first


def stream_metric(results: dict, prefix: str) -> float:
    """The single stream-level value whose name starts with ``prefix``."""
    values = [v for k, v in results.items() if k.startswith(prefix)]
    assert len(values) == 1, f"expected one metric starting with {prefix}, got {values}"
    return values[0]


def exp_metric(results: dict, prefix: str, exp: int) -> float:
    values = [v for k, v in results.items() if k.startswith(prefix) and k.endswith(f"Exp{exp:03d}")]
    assert len(values) == 1, f"expected one metric {prefix}..Exp{exp:03d}, got {values}"
    return values[0]
