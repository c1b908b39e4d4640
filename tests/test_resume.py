"""Issue 19: a run killed anywhere and resumed reports every metric of the uninterrupted run.

``avalanche-mind train --results`` holds every metric (accuracies, forgetting, per
experience entries, TaskId): the resumed run's must equal the uninterrupted run's,
for a kill during training, during the evaluation after a checkpoint, and between
experiences. A kill is a BaseException no handler of the command catches.
"""
from __future__ import annotations

import json

import pytest
import torch

from avalanche_mind import MIND, cli
from test_cli import TINY

RUN = [*TINY, "--teacher-epochs", "3", "--epochs", "3", "--seed", "1"]
FORGOTTEN = "ExperienceForgetting/eval_phase/test_stream/Task000/Exp001"
"""Needs the accuracy measured right after experience 1: missing when that evaluation is lost."""


class Killed(BaseException):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("whole") / "results.json"
    assert cli.main(["train", *RUN, "--results", str(path)]) == 0
    return json.loads(path.read_text())["metrics"]


def _kill(monkeypatch, where: str) -> None:
    """Arrange a kill: in the training of experience 2, in the evaluation after experience 1, or between them."""
    calls = {"train": 0, "eval": 0}
    train, evaluate, step = MIND.train, MIND.eval, torch.optim.AdamW.step

    def train_(self, *args, **kwargs):
        calls["train"] += 1
        if where == "training" and calls["train"] == 3:
            def dying_step(*a, **k):
                raise Killed
            monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
        return train(self, *args, **kwargs)

    def eval_(self, *args, **kwargs):
        calls["eval"] += 1
        if where == "evaluation" and calls["eval"] == 2:
            raise Killed
        results = evaluate(self, *args, **kwargs)
        if where == "between" and calls["eval"] == 2:
            raise Killed
        return results

    monkeypatch.setattr(MIND, "train", train_)
    monkeypatch.setattr(MIND, "eval", eval_)
    assert step is torch.optim.AdamW.step


@pytest.mark.parametrize("where", ["training", "evaluation", "between"])
def test_resumed_run_reports_every_metric_of_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch, where):
    ckpt, results = tmp_path / "run.pt", tmp_path / "results.json"
    argv = ["train", *RUN, "--checkpoint", str(ckpt), "--results", str(results)]
    _kill(monkeypatch, where)
    with pytest.raises(Killed):
        cli.main(argv)
    monkeypatch.undo()
    assert not results.exists()
    assert cli.main([*argv, "--resume"]) == 0
    got = json.loads(results.read_text())["metrics"]
    assert got == uninterrupted
    assert FORGOTTEN in got and "StreamForgetting/eval_phase/test_stream" in got
