"""An experience that fails part-way is undone: MIND is left as before it, and the experience can be trained again."""
from __future__ import annotations

import pytest
from avalanche.core import SupervisedPlugin

from helpers import make_mind


class Interrupt(Exception):
    pass


class FailOnce(SupervisedPlugin):
    """Raises at the end of the first training epoch it sees, then never again."""

    def __init__(self):
        super().__init__()
        self.armed = True

    def after_training_epoch(self, strategy, **kwargs):
        if self.armed:
            self.armed = False
            raise Interrupt


def test_an_experience_that_fails_mid_training_is_rolled_back_and_can_be_retried(class_incremental):
    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, plugins=[FailOnce()], teacher_epochs=1, train_epochs=1)
    with pytest.raises(Interrupt):
        strategy.train(stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0 and strategy.state.experience_ids == []
    assert all(int(layer.owner.max()) < 0 for _, layer in strategy.ownership.layers.items())
    strategy.train(stream[0], eval_streams=[])
    strategy.train(stream[1], eval_streams=[])  # the stream can finish
    assert strategy.state.experience_ids == [0, 1]
    strategy.eval(class_incremental.test_stream)
