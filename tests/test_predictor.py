"""Inference without a strategy: Predictor gives the strategy's own eval predictions."""
from __future__ import annotations

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_mind import MIND, mind_metrics, small_cnn
from avalanche_mind.io.checkpoint import CheckpointError, save_checkpoint
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.inference.predictor import Predictor

N_EXP, WIDTH = 3, 6


class CaptureEval(SupervisedPlugin):
    """Records every eval minibatch and the strategy's answers for it."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def after_eval_iteration(self, strategy, **kwargs):
        p = strategy.last_prediction
        self.batches.append((strategy.eval_task, strategy.mb_x.clone(), strategy.mb_y.clone(),
                             p.tag_class.clone(), p.task.clone(), None if p.taw_class is None else p.taw_class.clone()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    benchmark = toy_class_incremental(n_experiences=N_EXP, classes_per_experience=2, per_class=20,
                                      test_per_class=10, image_size=12, seed=0)
    capture = CaptureEval()
    strategy = MIND(model=small_cnn(2 * N_EXP, width=WIDTH), n_experiences=N_EXP, teacher_epochs=3,
                    train_epochs=3, train_mb_size=16, eval_mb_size=16, lr=0.01, teacher_lr=0.01,
                    temperature=2.0, milestones=[], teacher_milestones=[], seed=0, plugins=[capture],
                    evaluator=EvaluationPlugin(*mind_metrics(), loggers=[]))
    for experience in benchmark.train_stream:
        strategy.train(experience)
    capture.batches.clear()
    results = strategy.eval(benchmark.test_stream)
    path = tmp_path_factory.mktemp("predictor") / "mind.pt"
    save_checkpoint(strategy, path)
    return path, capture.batches, results


def test_predictor_equals_the_strategy_eval_predictions(trained):
    path, batches, results = trained
    predictor = Predictor.from_checkpoint(path, small_cnn(2 * N_EXP, width=WIDTH))
    assert predictor.n_tasks == N_EXP and predictor.temperature == 2.0
    correct = {"TAg": 0, "TAw": 0}
    total = 0
    for task, x, y, tag_class, chosen, taw_class in batches:
        tag = predictor.predict(x)
        assert torch.equal(tag.classes, tag_class)
        assert torch.equal(tag.tasks, chosen)
        taw = predictor.predict(x, task=task)
        assert torch.equal(taw.classes, taw_class)
        assert bool((taw.tasks == task).all())
        correct["TAg"] += int((tag.classes == y).sum())
        correct["TAw"] += int((taw.classes == y).sum())
        total += len(y)
    assert total == 10 * 2 * N_EXP
    stream = "eval_phase/test_stream/Task000"
    assert correct["TAg"] / total == pytest.approx(results[f"Top1_TAg_Acc_Stream/{stream}"])
    assert correct["TAw"] / total == pytest.approx(results[f"Top1_TAw_Acc_Stream/{stream}"])
    assert correct["TAw"] > correct["TAg"] > 0  # a trained model, and TAw is the easier problem


def test_per_sample_task_ids_and_invalid_tasks(trained):
    path, batches, _ = trained
    predictor = Predictor.from_checkpoint(path, small_cnn(2 * N_EXP, width=WIDTH))
    x = torch.cat([b[1] for b in batches])[:24]
    tasks = torch.arange(24) % N_EXP
    mixed = predictor.predict(x, task=tasks)
    for t in range(N_EXP):
        rows = tasks == t
        assert torch.equal(mixed.classes[rows], predictor.predict(x[rows], task=t).classes)
        # each answer lies in its task's output slice
        assert set(mixed.classes[rows].tolist()) <= set(predictor.state.slices[t])
    for bad in (N_EXP, -1, 1.5):
        with pytest.raises(ValueError, match="task must be an int"):
            predictor.predict(x, task=bad)
    with pytest.raises(ValueError, match="task ids for"):
        predictor.predict(x, task=[0, 1])


def plain_small_cnn(num_classes, width):
    """small_cnn's architecture without gating: Predictor gates it itself."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, num_classes, bias=False),
    )


def test_an_ungated_model_is_gated_and_gives_the_same_answers(trained):
    path, batches, _ = trained
    x = batches[0][1]
    gated = Predictor.from_checkpoint(path, small_cnn(2 * N_EXP, width=WIDTH)).predict(x)
    plain = Predictor.from_checkpoint(path, plain_small_cnn(2 * N_EXP, WIDTH)).predict(x)
    assert torch.equal(gated.classes, plain.classes) and torch.equal(gated.tasks, plain.tasks)


def test_wrong_model_or_damaged_file_is_an_error_not_a_wrong_model(trained, tmp_path):
    path, _, _ = trained
    with pytest.raises(CheckpointError, match="different model architecture"):
        Predictor.from_checkpoint(path, small_cnn(2 * N_EXP, width=WIDTH + 2))
    with pytest.raises(CheckpointError, match="different model architecture"):
        Predictor.from_checkpoint(path, small_cnn(2 * N_EXP + 4, width=WIDTH))  # other num_classes
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        Predictor.from_checkpoint(damaged, small_cnn(2 * N_EXP, width=WIDTH))
    with pytest.raises(TypeError):
        Predictor.from_checkpoint(path, "small_cnn")


def test_nonfinite_inputs_a_missing_batch_dimension_and_an_infinite_temperature_are_refused(trained):
    path, _, _ = trained
    predictor = Predictor.from_checkpoint(path, small_cnn(6, width=6))
    x = torch.rand(4, 3, 12, 12)
    predictor.predict(x)
    x[1, 0, 0, 0] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"inputs hold 2 NaN or infinite value\(s\) \(of 1728\)"):
        predictor.predict(x)
    with pytest.raises(ValueError, match=r"inputs must be a batch with 4 dimensions \(N first\), got one sample of "
                                         r"shape \[3, 12, 12\]: add the batch dimension, e.g. x.unsqueeze\(0\)"):
        predictor.predict(torch.rand(3, 12, 12), task=0)
    with pytest.raises(ValueError, match="temperature must be finite"):
        Predictor.from_checkpoint(path, small_cnn(6, width=6), temperature=float("inf"))
