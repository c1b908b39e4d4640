"""Bad input gets a clear error that names the fix."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avalanche_mind import MIND, gate_model, small_cnn
from avalanche_mind.errors import TrainingDivergedError
from helpers import make_mind


def build(**kwargs):
    return MIND(model=small_cnn(10), n_experiences=2, evaluator=None, **kwargs)


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


@pytest.mark.parametrize("name, value, message", [
    ("beta", math.inf, "beta must be finite"),
    ("lr", math.inf, "lr must be finite"),
    ("lr_gamma", math.nan, "lr_gamma must be finite"),
    ("teacher_lr", -1.0, "teacher_lr must be > 0"),
    ("temperature", math.inf, "temperature must be finite"),
    ("weight_decay", math.nan, "weight_decay must be finite"),
    ("rejection_weight", math.inf, "rejection_weight must be finite"),
    ("lr", "0.1", "lr must be a number, got '0.1'"),
    ("beta", "5", "beta must be a number"),
    ("milestones", "40", "milestones must be a list of integer epochs"),
    ("milestones", [2.5], "milestones must be a list of integer epochs"),
    ("teacher_milestones", 35, "teacher_milestones must be a list"),
    ("self_distillation", "no", "self_distillation must be True or False, got 'no'"),
    ("weight_sharing", 1, "weight_sharing must be True or False"),
    ("eval_mb_size", 0, "eval_mb_size must be an integer >= 1"),
])
def test_a_bad_hyperparameter_is_refused_at_construction_naming_it(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build(**{name: value})


def test_good_hyperparameters_of_other_accepted_types_are_accepted():
    build(milestones=(40,), teacher_milestones=[], lr=1, beta=0, temperature=6.5, self_distillation=False)


@pytest.mark.parametrize("phase, overrides", [
    ("teacher", {"teacher_lr": 1e30}),
    ("distillation", {"lr": 1e30}),
])
def test_a_diverging_phase_stops_naming_experience_phase_and_epoch_and_keeps_nothing(class_incremental, phase,
                                                                                     overrides):
    strategy = make_mind(n_experiences=5, teacher_epochs=2, train_epochs=2, **overrides)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match=rf"experience 0 \(MIND task 0\), {phase} phase, epoch \d+ of 2"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0  # nothing of the failed experience kept
    after = strategy.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_empty_experience_is_refused_naming_it_and_training_goes_on(class_incremental):
    stream = class_incremental.train_stream
    strategy = make_mind(n_experiences=2, teacher_epochs=1, train_epochs=1)
    experience = stream[0]
    empty = experience.dataset.subset([])
    experience.dataset, original = empty, experience.dataset
    try:
        with pytest.raises(ValueError, match="experience 0 has no samples"):
            strategy.train(experience, eval_streams=[])
    finally:
        experience.dataset = original
    assert strategy.state.n_tasks == 0
    strategy.train(stream[0], eval_streams=[])
    strategy.eval(class_incremental.test_stream)


def test_a_partly_gated_model_is_refused_naming_its_plain_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    gate_model(nn.Sequential(model[0]))  # backbone gated, head plain
    model[2] = nn.Linear(4 * 30 * 30, 10)
    with pytest.raises(ValueError, match=r"only partly gated: '2' are plain nn.Conv2d/nn.Linear.*gate_model\(model\)"):
        MIND(model=model, n_experiences=2, evaluator=None)


class HeadFirst(nn.Module):
    """The output layer is registered before an auxiliary Linear: the last Linear is not the classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 10)
        self.aux = nn.Linear(4, 3)

    def forward(self, x):
        h = self.features(x)
        self.aux(h)
        return self.head(h)


@pytest.mark.parametrize("teacher_epochs", [1, 0])
def test_a_last_linear_that_is_not_the_output_layer_is_refused(class_incremental, teacher_epochs):
    strategy = make_mind(model=HeadFirst(), n_experiences=5, teacher_epochs=teacher_epochs, train_epochs=1)
    with pytest.raises(ValueError, match=r"MIND takes the last nn.Linear registered in the model, 'aux' \(4 -> 3\), "
                                         r"as its classifier, but the model's output \(shape \[32, 10\]\) does not "
                                         r"come from that layer. Register the output layer last"):
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
    assert strategy.state.n_tasks == 0


def test_mind_without_a_seed_trains_whatever_torch_s_initial_seed():
    """MIND's default seed is torch.initial_seed(), a 64-bit number in a fresh process: the seeds derived
    from it must stay in the generator's range (a 63-bit overflow once stopped the README's pipeline)."""
    from avalanche_mind import MIND, small_cnn
    from avalanche_mind.data.toy import toy_class_incremental

    from helpers import quiet_evaluator

    torch.manual_seed(2**64 - 12345)  # what a fresh process may draw
    stream = toy_class_incremental(n_experiences=2, classes_per_experience=2, per_class=10, test_per_class=2)
    mind = MIND(model=small_cnn(4), n_experiences=2, teacher_epochs=1, train_epochs=1, evaluator=quiet_evaluator)
    assert mind.seed >= 2**63
    for experience in stream.train_stream:
        mind.train(experience)
    assert mind.state.n_tasks == 2
