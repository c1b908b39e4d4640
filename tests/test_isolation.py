"""The method's central guarantee: what an experience learned is never changed later."""
from __future__ import annotations

import torch

from avalanche_mind.core.layers import gated_layers
from helpers import exp_metric, make_mind


def _train_and_check(strategy, stream):
    strategy.train(stream[0], eval_streams=[])
    weights = {n: l.weight.detach().clone() for n, l in gated_layers(strategy.model)}
    owners = {n: (l.owner == 0).clone() for n, l in gated_layers(strategy.model)}
    bn = {k: v.clone() for k, v in strategy.state.bn_snapshots[0].items()}
    for experience in stream[1:3]:
        strategy.train(experience, eval_streams=[])
    changed_any = False
    for name, layer in gated_layers(strategy.model):
        mine = owners[name]
        assert mine.any(), f"experience 0 owns nothing in {name}"
        assert torch.equal(layer.owner == 0, mine), f"ownership of experience 0 changed in {name}"
        assert torch.equal(layer.weight.detach()[mine], weights[name][mine]), f"{name}: weights of experience 0 moved"
        changed_any |= not torch.equal(layer.weight.detach(), weights[name])
    assert changed_any, "later experiences trained nothing: the test would be vacuous"
    snapshot = strategy.state.bn_snapshots[0]
    assert snapshot.keys() == bn.keys()
    for key in bn:
        assert torch.equal(snapshot[key], bn[key]), f"BatchNorm snapshot of experience 0 changed: {key}"


def test_isolation_adamw_with_weight_decay(class_incremental):
    strategy = make_mind(weight_decay=0.05, teacher_epochs=2, train_epochs=2)
    assert strategy.optimizer.param_groups[0]["weight_decay"] == 0.05
    _train_and_check(strategy, class_incremental.train_stream)


def test_isolation_sgd_with_momentum(class_incremental):
    from avalanche_mind import small_cnn

    torch.manual_seed(0)
    model = small_cnn(10)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    strategy = make_mind(model=model, optimizer=sgd, teacher_epochs=2, train_epochs=2)
    _train_and_check(strategy, class_incremental.train_stream)


def test_taw_accuracy_of_first_experience_is_unchanged(trained_run, class_incremental):
    strategy, after_first = trained_run
    before = exp_metric(after_first["results"], "Top1_TAw_Acc_Exp", 0)
    now = exp_metric(strategy.eval(class_incremental.test_stream[0]), "Top1_TAw_Acc_Exp", 0)
    assert now == before


def test_weights_of_first_experience_survive_the_whole_stream(trained_run):
    strategy, after_first = trained_run
    state = strategy.model.state_dict()
    for name, layer in gated_layers(strategy.model):
        mine = layer.owner == 0
        assert torch.equal(state[f"{name}.weight"][mine], after_first["weights"][f"{name}.weight"][mine])
