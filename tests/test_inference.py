"""SubnetworkBank: the traced ("graph") and vectorised ("batched") ways give the module way's answers.

Each test builds a small gated model, gives several tasks their own sub-network
(OwnershipMap.allocate) and their own BatchNorm snapshot, and compares every way of
running the sub-networks against an independent reference: the model itself,
gated to the task with its BatchNorm snapshot loaded, in eval mode.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind import gate_model, small_cnn
from avalanche_mind.inference.bank import SubnetworkBank, predict
from avalanche_mind.core.layers import batchnorm_modules, gated_layers
from avalanche_mind.models.gresnet import ResNet
from avalanche_mind.core.ownership import OwnershipMap
from avalanche_mind.core.snapshots import experience_state, load_experience_state
from avalanche_mind.inference.tracing import Untraceable, trace_for_tasks

N_CLASSES = 8
N_TASKS = 4
TEMPERATURE = 2.0
TOL = dict(rtol=1e-4, atol=1e-5)


def small_resnet() -> nn.Module:
    """gresnet32's architecture (option-A shortcuts, bias-free), one block per stage, narrow."""
    return gate_model(ResNet(N_CLASSES, blocks_per_stage=1, widths=(4, 8, 8)))


def sequential_cnn() -> nn.Module:
    """A user's own nn.Sequential: a biased conv before BatchNorm, and a BatchNorm1d after a Linear."""
    return gate_model(
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1, bias=True),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, 16, bias=False),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Linear(16, N_CLASSES, bias=False),
        )
    )


class DataDependent(nn.Module):
    """A forward with data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, N_CLASSES, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn(self.conv(x))
        if out.mean() > 0:  # depends on the values: not traceable
            out = F.relu(out)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class ConvBnHead(nn.Module):
    """conv -> BatchNorm -> pooled linear head, wired by ``forward_fn`` (a forward the rewrite must vet)."""

    def __init__(self, forward_fn, track_running_stats: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4, track_running_stats=track_running_stats)
        self.fc = nn.Linear(4, N_CLASSES, bias=False)
        self.forward_fn = forward_fn

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_fn(self, x)

    def head(self, out: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


#: Forwards the graph rewrite cannot prove task-safe, with the reason it gives.
REFUSED_FORWARDS = {
    "a BatchNorm module is used more than once": lambda m, x: m.head(m.bn(m.bn(m.conv(x)))),
    r"conv.weight is used other than as weight \* mask": lambda m, x: m.head(m.bn(m.conv(x))) + m.conv.weight.sum(),
    "bn.weight is read outside its BatchNorm module": lambda m, x: m.head(m.bn(m.conv(x)) * m.bn.weight.view(1, -1, 1, 1)),
    "unexpected call of BatchNorm bn": lambda m, x: m.head(m.bn(input=m.conv(x))),
}

def with_tasks(model: nn.Module, n_tasks: int = N_TASKS, n_snapshots: Optional[int] = None):
    """Allocate ``n_tasks`` class-incremental tasks, each with its own random BatchNorm snapshot."""
    n_snapshots = n_tasks if n_snapshots is None else n_snapshots
    ownership = OwnershipMap(model, n_tasks)
    g = torch.Generator().manual_seed(0)
    per = N_CLASSES // n_tasks
    slices: List[Tensor] = []
    snapshots: List[Dict[str, Tensor]] = []
    with torch.no_grad():
        for task in range(n_tasks):
            classes = list(range(task * per, (task + 1) * per))
            ownership.allocate(task, classes, generator=g)
            for _, bn in batchnorm_modules(model):
                c = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
                bn.weight.copy_(0.5 + torch.rand(c, generator=g))
                bn.bias.copy_(0.2 * torch.randn(c, generator=g))
            if task < n_snapshots:
                snapshots.append(experience_state(model))
            slices.append(torch.tensor(classes))
    # Biases are shared, not owned: give them values so that folding them is checked.
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            with torch.no_grad():
                module.bias.copy_(torch.randn(module.bias.shape, generator=g))
    return model.eval(), ownership, snapshots, slices


def reference_logits(model, ownership, snapshots, task: int, x: Tensor, weight_sharing: bool) -> Tensor:
    """The model itself gated to ``task`` with the task's snapshot (or the live BatchNorm) loaded."""
    live = experience_state(model)
    try:
        if task < len(snapshots):
            load_experience_state(model, snapshots[task])
        ownership.activate(task, weight_sharing)
        with torch.no_grad():
            return model.eval()(x)
    finally:
        load_experience_state(model, live)
        ownership.activate_dense()


def check_all_modes(model, ownership, snapshots, slices, x, weight_sharing=True, modes=("module", "graph", "batched"),
                    expect_mode=None):
    n_tasks = len(slices)
    expected = [reference_logits(model, ownership, snapshots, t, x, weight_sharing) for t in range(n_tasks)]
    answers = {}
    for mode in modes:
        bank = SubnetworkBank(model, ownership, snapshots, n_tasks, weight_sharing, mode=mode, tasks_per_pass=3)
        if expect_mode is not None:
            assert bank.mode == expect_mode
        elif mode != "auto":
            assert bank.mode == mode
        with torch.no_grad():
            logits = bank.all_logits(x)
            for t in range(n_tasks):
                torch.testing.assert_close(logits[t], expected[t], **TOL)
                torch.testing.assert_close(bank.logits(x, t), expected[t], **TOL)
            torch.testing.assert_close(bank.stacked_logits(x), torch.stack(expected), **TOL)
            answers[mode] = [predict(bank, x, slices, TEMPERATURE, "max_confidence", true_task=t) for t in (0, n_tasks - 1)]
    first = answers[modes[0]]
    for mode in modes[1:]:
        for a, b in zip(first, answers[mode]):
            assert torch.equal(a.tag_class, b.tag_class)
            assert torch.equal(a.task, b.task)
            assert torch.equal(a.taw_class, b.taw_class)
            torch.testing.assert_close(a.output, b.output, **TOL)
    return answers


@pytest.mark.parametrize("weight_sharing", [True, False])
def test_resnet_graph_and_batched_match_module(weight_sharing):
    torch.manual_seed(0)
    model, ownership, snapshots, slices = with_tasks(small_resnet())
    x = torch.randn(6, 3, 8, 8)
    answers = check_all_modes(model, ownership, snapshots, slices, x, weight_sharing)
    # The tasks really differ (otherwise the comparison would prove little).
    bank = SubnetworkBank(model, ownership, snapshots, N_TASKS, weight_sharing, mode="module")
    with torch.no_grad():
        logits = bank.all_logits(x)
    assert not torch.allclose(logits[0], logits[1])
    assert all(len(a.taw_class) == len(x) for a in answers["graph"])


def test_auto_mode_traces_a_resnet_and_folds_batchnorm():
    model, ownership, snapshots, slices = with_tasks(small_resnet())
    bank = SubnetworkBank(model, ownership, snapshots, N_TASKS, True)
    assert bank.mode == "graph"
    # Every BatchNorm follows a convolution: all folded, no BatchNorm slot left.
    assert not any(slot[0] == "bn" for slot in bank._slots)
    # Building the bank leaves the model as it was: gating off, eval/train flags kept.
    assert all(float(layer.mask.sum()) == 1.0 and layer.mask.dim() == 0 for layer in ownership.layers.values())


def test_user_sequential_cnn():
    torch.manual_seed(1)
    model, ownership, snapshots, slices = with_tasks(sequential_cnn())
    check_all_modes(model, ownership, snapshots, slices, torch.randn(5, 3, 8, 8))


def test_small_cnn_without_weight_sharing():
    torch.manual_seed(2)
    model, ownership, snapshots, slices = with_tasks(small_cnn(N_CLASSES, width=4))
    check_all_modes(model, ownership, snapshots, slices, torch.randn(5, 3, 8, 8), weight_sharing=False)


def test_untraceable_forward_falls_back_to_module():
    torch.manual_seed(3)
    model, ownership, snapshots, slices = with_tasks(gate_model(DataDependent()))
    x = torch.randn(5, 3, 8, 8)
    check_all_modes(model, ownership, snapshots, slices, x, modes=("auto", "graph", "batched"), expect_mode="module")



@pytest.mark.parametrize("reason", list(REFUSED_FORWARDS))
def test_graph_rewrite_refuses_forwards_it_cannot_vet(reason):
    """A forward that reads a gated weight or a BatchNorm in an unknown way is refused, so the bank runs modules."""
    model = gate_model(ConvBnHead(REFUSED_FORWARDS[reason]))
    with pytest.raises(Untraceable, match=reason):
        trace_for_tasks(model, dict(gated_layers(model)), fold_batchnorm=True)
    model, ownership, snapshots, _ = with_tasks(model)
    assert SubnetworkBank(model, ownership, snapshots, N_TASKS, True, mode="graph").mode == "module"


def test_graph_rewrite_refuses_batchnorm_without_running_statistics():
    model = gate_model(ConvBnHead(lambda m, x: m.head(m.bn(m.conv(x))), track_running_stats=False))
    with pytest.raises(Untraceable, match="BatchNorm bn has no running statistics"):
        trace_for_tasks(model, dict(gated_layers(model)), fold_batchnorm=False)

def test_task_without_snapshot_uses_live_batchnorm():
    """Periodic eval while the last task trains: it has no snapshot yet, the live BatchNorm is used."""
    torch.manual_seed(4)
    model, ownership, snapshots, slices = with_tasks(small_resnet(), n_snapshots=N_TASKS - 1)
    assert len(snapshots) == N_TASKS - 1
    x = torch.randn(4, 3, 8, 8)
    check_all_modes(model, ownership, snapshots, slices, x)
    # The comparison means something: the live BatchNorm is not the previous task's snapshot.
    live = reference_logits(model, ownership, snapshots, N_TASKS - 1, x, True)
    previous = reference_logits(model, ownership, snapshots + [snapshots[-1]], N_TASKS - 1, x, True)
    assert not torch.allclose(live, previous)


def test_banks_do_not_change_the_model():
    model, ownership, snapshots, slices = with_tasks(small_resnet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in ("module", "graph", "batched"):
        bank = SubnetworkBank(model, ownership, snapshots, N_TASKS, True, mode=mode)
        with torch.no_grad():
            predict(bank, torch.randn(3, 3, 8, 8), slices, TEMPERATURE, "max_confidence", true_task=0)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
