"""Progress bars: teacher and distillation bars (loss, learning rate) with verbose=True, nothing without."""
from __future__ import annotations

import functools

import pytest
import torch
from avalanche.training.plugins import EvaluationPlugin

import avalanche_mind.logging.progress
from avalanche_mind import MIND, small_cnn
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.logging.progress import DistillationProgressPlugin

EPOCHS = 2


@pytest.fixture(autouse=True)
def redraw_every_epoch(monkeypatch):
    # tqdm otherwise waits 0.1 s between redraws, and these epochs are faster.
    monkeypatch.setattr(avalanche_mind.logging.progress, "tqdm", functools.partial(avalanche_mind.logging.progress.tqdm, mininterval=0))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train_first_experience(verbose):
    torch.manual_seed(0)
    benchmark = toy_class_incremental(n_experiences=2, classes_per_experience=2, per_class=16,
                                      test_per_class=4, image_size=12, seed=0)
    strategy = MIND(model=small_cnn(4, width=4), n_experiences=2, teacher_epochs=EPOCHS, train_epochs=EPOCHS,
                    train_mb_size=16, lr=0.01, teacher_lr=0.02, milestones=[1], teacher_milestones=[1], seed=0,
                    evaluator=EvaluationPlugin(loggers=[]), verbose=verbose)
    strategy.train(benchmark.train_stream[0], eval_streams=[])
    return strategy


def test_mind_carries_one_distillation_bar():
    strategy = train_first_experience(verbose=False)
    assert sum(isinstance(p, DistillationProgressPlugin) for p in strategy.plugins) == 1


def test_verbose_shows_teacher_and_distillation_bars_with_loss_and_lr(capfd):
    train_first_experience(verbose=True)
    err = capfd.readouterr().err
    teacher = err[err.index("teacher exp 0"):err.index("distillation exp 0")]
    distillation = err[err.index("distillation exp 0"):]
    # Each bar shows the learning rate its epoch used: halved after the first epoch (milestone 1).
    for bar, rates in ((teacher, ("0.02", "0.01")), (distillation, ("0.01", "0.005"))):
        assert f"1/{EPOCHS}" in bar and f"{EPOCHS}/{EPOCHS}" in bar and "loss=" in bar
        assert bar.index(f"lr={rates[0]}") < bar.index(f"lr={rates[1]}"), bar
    assert err.count("distillation exp 0:   0%") == 1  # one bar, not one per plugin copy


def test_not_verbose_prints_nothing(capfd):
    train_first_experience(verbose=False)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
