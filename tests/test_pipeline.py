"""MIND inside ordinary Avalanche pipelines: evaluators, loggers, user models, domain streams."""
from __future__ import annotations

import torch
from avalanche.evaluation.metrics import accuracy_metrics, confusion_matrix_metrics, forgetting_metrics, loss_metrics
from avalanche.logging import InteractiveLogger
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_mind import GatedConv2d, GatedLinear, mind_metrics
from helpers import make_mind, stream_metric


def test_runs_with_avalanche_evaluation_plugin_and_interactive_logger(class_incremental, capsys):
    evaluator = EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(stream=True),
        forgetting_metrics(experience=True, stream=True),
        confusion_matrix_metrics(num_classes=10, stream=True, save_image=False),
        *mind_metrics(),
        loggers=[InteractiveLogger()],
    )
    strategy = make_mind(evaluator=evaluator, teacher_epochs=2, train_epochs=2)
    stream = class_incremental.train_stream
    for experience in stream[:2]:
        strategy.train(experience, eval_streams=[])
        results = strategy.eval(class_incremental.test_stream[:2])
    printed = capsys.readouterr().out
    assert "Top1_TAg_Acc_Stream/eval_phase/test_stream" in printed
    assert any(k.startswith("StreamForgetting/eval_phase/test_stream") for k in results)
    assert any(k.startswith("ConfusionMatrix_Stream/eval_phase/test_stream") for k in results)
    assert 0.0 <= stream_metric(results, "Top1_TAw_Acc_Stream") <= 1.0
    loss = stream_metric(results, "Loss_Stream")
    assert torch.isfinite(torch.tensor(loss))


def test_untrained_experiences_report_no_taw(class_incremental):
    strategy = make_mind(teacher_epochs=1, train_epochs=1)
    strategy.train(class_incremental.train_stream[0], eval_streams=[])
    results = strategy.eval(class_incremental.test_stream)
    taw_keys = [k for k in results if k.startswith("Top1_TAw_Acc_Exp")]
    assert taw_keys == ["Top1_TAw_Acc_Exp/eval_phase/test_stream/Task000/Exp000"]
    assert len([k for k in results if k.startswith("Top1_TAg_Acc_Exp")]) == 5


def test_users_own_sequential_cnn_is_gated_in_place(class_incremental):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10),
    )
    conv_weight = model[0].weight.detach().clone()
    strategy = make_mind(model=model, teacher_epochs=3, train_epochs=3)
    assert isinstance(model[0], GatedConv2d) and isinstance(model[7], GatedLinear)
    assert torch.equal(model[0].weight.detach(), conv_weight)  # gating keeps the user's weights
    for experience in class_incremental.train_stream[:3]:
        strategy.train(experience, eval_streams=[])
    results = strategy.eval(class_incremental.test_stream[:3])
    assert stream_metric(results, "Top1_TAw_Acc_Stream") >= 0.8
    # biases are shared: trained with experience 0 only, then frozen
    assert strategy.model[5].bias.requires_grad


def test_domain_incremental_stream(domain_incremental):
    strategy = make_mind(n_classes=4, n_experiences=3, teacher_epochs=4, train_epochs=4)
    for experience in domain_incremental.train_stream:
        strategy.train(experience, eval_streams=[])
    assert strategy.state.slices == [[0, 1, 2, 3]] * 3  # every output, every experience
    classifier = strategy.ownership.classifier
    # the classifier is shared out like any other layer, not given away whole to domain 0
    assert [int((classifier.owner == t).sum()) for t in range(3)] == [classifier.weight.numel() // 3] * 3
    results = strategy.eval(domain_incremental.test_stream)
    task_id = stream_metric(results, "Top1_TaskId_Acc_Stream")
    tag = stream_metric(results, "Top1_TAg_Acc_Stream")
    assert stream_metric(results, "Top1_TAw_Acc_Stream") >= 0.8
    assert tag >= 0.6 and task_id > 1 / 3


def test_periodic_eval_during_training(class_incremental):
    strategy = make_mind(teacher_epochs=1, train_epochs=2, eval_every=1)
    strategy.train(class_incremental.train_stream[0], eval_streams=[class_incremental.test_stream[0]])
    history = strategy.evaluator.get_all_metrics()
    taw = history["Top1_TAw_Acc_Exp/eval_phase/test_stream/Task000/Exp000"][1]
    assert len(taw) >= 2  # evaluated during the experience, not only at its end
    # the eval left training state intact: the next experience trains normally
    strategy.train(class_incremental.train_stream[1], eval_streams=[])
    assert strategy.state.n_tasks == 2 and len(strategy.state.bn_snapshots) == 2


def test_ownership_travels_with_the_model_state_dict(trained_run):
    from avalanche_mind import small_cnn
    from avalanche_mind.core.layers import gated_layers

    strategy, _ = trained_run
    state = strategy.model.state_dict()
    owners = [k for k in state if k.endswith(".owner")]
    assert owners and all(state[k].dtype == torch.int8 for k in owners)
    fresh = small_cnn(10)
    fresh.load_state_dict(state)
    for (_, a), (_, b) in zip(gated_layers(fresh), gated_layers(strategy.model)):
        assert torch.equal(a.owner, b.owner)
