"""Bad input gets a clear error that names the fix."""
from __future__ import annotations

import pytest
from torch import nn

from avalanche_mind import MIND, gate_model, small_cnn
from helpers import make_mind


def test_model_without_conv_or_linear():
    with pytest.raises(TypeError, match="no nn.Conv2d or nn.Linear"):
        MIND(model=nn.Sequential(nn.ReLU(), nn.Flatten()), n_experiences=2, evaluator=None)
    with pytest.raises(TypeError, match="no nn.Conv2d or nn.Linear"):
        gate_model(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        MIND(model="resnet", n_experiences=2)


def test_more_experiences_than_n_experiences(class_incremental):
    strategy = make_mind(n_experiences=1, teacher_epochs=1, train_epochs=1)
    strategy.train(class_incremental.train_stream[0], eval_streams=[])
    with pytest.raises(ValueError, match="n_experiences=1"):
        strategy.train(class_incremental.train_stream[1], eval_streams=[])


@pytest.mark.parametrize("name", ["teacher_epochs", "train_epochs"])
def test_negative_epochs(name):
    with pytest.raises(ValueError, match=name):
        MIND(model=small_cnn(10), n_experiences=2, evaluator=None, **{name: -1})


def test_unknown_distill_loss_and_task_inference():
    with pytest.raises(ValueError, match="distill_loss.*'js'"):
        MIND(model=small_cnn(10), n_experiences=2, distill_loss="mse", evaluator=None)
    with pytest.raises(ValueError, match="task_inference.*max_confidence"):
        MIND(model=small_cnn(10), n_experiences=2, task_inference="oracle", evaluator=None)


def test_classes_beyond_model_outputs(class_incremental):
    strategy = make_mind(n_classes=4, teacher_epochs=1, train_epochs=1)
    stream = class_incremental.train_stream
    strategy.train(stream[0], eval_streams=[])  # classes 0, 1 fit
    with pytest.raises(ValueError, match="num_classes >= 6"):
        strategy.train(stream[2], eval_streams=[])  # classes 4, 5 do not


def test_bad_capacity():
    with pytest.raises(ValueError, match="capacity"):
        MIND(model=small_cnn(10), n_experiences=2, capacity=1.5, evaluator=None)


def test_a_huge_finite_learning_rate_is_a_divergence_error_and_nothing_is_kept(class_incremental):
    from avalanche_mind.errors import TrainingDivergedError

    strategy = make_mind(lr=1e38, teacher_lr=1e38, teacher_epochs=1, train_epochs=1)
    with pytest.raises(TrainingDivergedError, match="lower the learning rates"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0
