"""MIND learns: high task-aware accuracy, and task-agnostic accuracy above fine-tuning."""
from __future__ import annotations

import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_mind import small_cnn
from helpers import FAST, stream_metric


def test_taw_and_tag_beat_naive_finetuning(trained_run, class_incremental):
    strategy, _ = trained_run
    results = strategy.eval(class_incremental.test_stream)
    taw = stream_metric(results, "Top1_TAw_Acc_Stream")
    tag = stream_metric(results, "Top1_TAg_Acc_Stream")
    task_id = stream_metric(results, "Top1_TaskId_Acc_Stream")
    # mb_output's argmax is the TAg answer, so Avalanche's own accuracy equals TAg.
    assert stream_metric(results, "Top1_Acc_Stream") == tag

    torch.manual_seed(0)
    model = small_cnn(10)
    naive = Naive(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=FAST["lr"]),
        train_mb_size=FAST["train_mb_size"],
        train_epochs=FAST["teacher_epochs"] + FAST["train_epochs"],  # MIND's teacher + student budget
        eval_mb_size=256,
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
    )
    for experience in class_incremental.train_stream:
        naive.train(experience, eval_streams=[])
    naive_acc = stream_metric(naive.eval(class_incremental.test_stream), "Top1_Acc_Stream")
    print(f"MIND TAw={taw:.3f} TAg={tag:.3f} TaskId={task_id:.3f}; Naive TAg={naive_acc:.3f}")
    assert taw >= 0.9
    assert tag > naive_acc
