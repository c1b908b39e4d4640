"""Shared fixtures: small generated benchmarks and a MIND run trained once per session."""
from __future__ import annotations

import pytest
import torch

from avalanche_mind.data.toy import toy_class_incremental, toy_domain_incremental
from helpers import make_mind

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
