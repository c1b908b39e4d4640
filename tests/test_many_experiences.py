"""Many experiences (100+): owner dtype, fractional capacity, packed owners, compact state, loading."""
from __future__ import annotations

import io
import math

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_mind import FREE, MIND, gate_model, mind_metrics, small_cnn
from avalanche_mind.data.toy import toy_class_incremental
from avalanche_mind.core.layers import PACKED_OWNER_MAX, compact_state_dict, pack_owner, unpack_owner
from avalanche_mind.core.ownership import OwnershipMap, set_owner_dtype
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.io.checkpoint import save_checkpoint


def tiny_model(n_classes: int = 300) -> nn.Module:
    torch.manual_seed(0)
    return gate_model(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=False),  # 216 weights
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 64, bias=False),  # 512 weights
            nn.ReLU(),
            nn.Linear(64, n_classes, bias=False),
        )
    )


@pytest.mark.parametrize("n_experiences, dtype", [(120, torch.int8), (150, torch.int16)])
def test_fraction_policy_over_many_experiences(n_experiences, dtype):
    fraction = 0.05
    model = tiny_model(2 * n_experiences)
    ownership = OwnershipMap(model, n_experiences, capacity=fraction)
    assert all(l.owner.dtype == dtype for l in ownership.layers.values())
    g = torch.Generator().manual_seed(0)
    hidden = {n: l for n, l in ownership.layers.items() if n != ownership.classifier_name}
    for task in range(n_experiences):
        before = {n: l.owner.clone() for n, l in ownership.layers.items()}
        ownership.allocate(task, [2 * task, 2 * task + 1], generator=g)
        for name, layer in ownership.layers.items():
            old, new = before[name], layer.owner
            changed = old != new
            # Only FREE weights are taken, all by this task; earlier owners are untouched.
            assert bool((old[changed] == FREE).all()) and bool((new[changed] == task).all())
            taken, n_free = int(changed.sum()), int((old == FREE).sum())
            if name == ownership.classifier_name:
                assert taken == 2 * layer.in_features  # the rows of the task's two classes
                assert bool((new[[2 * task, 2 * task + 1]] == task).all())
            else:
                # The fraction of what is still FREE, at least one weight while any is FREE.
                assert taken == min(max(round(fraction * n_free), 1), n_free)
            # FREE weights are zero.
            assert bool((layer.weight[new == FREE] == 0).all())
    for name, layer in hidden.items():
        # Geometric use: about 1 - (1 - f) ** T of the layer (the floor of one weight takes a little more);
        # a small layer can run out of FREE weights, a later experience then shares its predecessors'.
        used = float((layer.owner != FREE).float().mean())
        assert used >= 1 - (1 - fraction) ** n_experiences - 0.02
    classifier = ownership.classifier
    assert set(torch.unique(classifier.owner).tolist()) == set(range(n_experiences))  # every experience has rows
    with pytest.raises(ValueError, match=f"n_experiences={n_experiences}"):
        ownership.allocate(n_experiences, [0], generator=g)


def test_equal_policy_refuses_beyond_n_experiences():
    model = tiny_model(10)
    ownership = OwnershipMap(model, 3)
    g = torch.Generator().manual_seed(0)
    for task in range(3):
        ownership.allocate(task, [3 * task, 3 * task + 1, 3 * task + 2], generator=g)
        conv = ownership.layers["0"]
        assert int((conv.owner == task).sum()) == conv.weight.numel() // 3
    with pytest.raises(ValueError, match=r"capacity='equal'.*n_experiences=3.*larger n_experiences"):
        ownership.allocate(3, [9], generator=g)


def test_mind_takes_a_fraction_with_an_upper_bound():
    model = small_cnn(10, width=4)
    strategy = MIND(model=model, n_experiences=100, capacity=0.1, evaluator=None)
    assert strategy.ownership.capacity == 0.1
    assert all(l.owner.dtype == torch.int8 for l in strategy.ownership.layers.values())
    with pytest.raises(ValueError, match="capacity"):
        MIND(model=small_cnn(10, width=4), n_experiences=100, capacity=1, evaluator=None)


@pytest.mark.parametrize("shape", [(1,), (2,), (7,), (33,), (3, 5, 3, 3), (10, 9)])
def test_pack_unpack_round_trip(shape):
    g = torch.Generator().manual_seed(sum(shape))
    owner = torch.randint(FREE, PACKED_OWNER_MAX + 1, shape, generator=g, dtype=torch.int64).to(torch.int8)
    owner.view(-1)[0] = FREE
    owner.view(-1)[-1] = PACKED_OWNER_MAX
    packed = pack_owner(owner)
    assert packed.dtype == torch.uint8 and packed.numel() == (owner.numel() + 1) // 2
    assert torch.equal(unpack_owner(packed, owner.shape), owner)
    assert torch.equal(unpack_owner(packed, owner.shape, torch.int16), owner.to(torch.int16))


def test_pack_refuses_ids_beyond_four_bits():
    with pytest.raises(ValueError, match="4 bits"):
        pack_owner(torch.tensor([0, PACKED_OWNER_MAX + 1], dtype=torch.int8))
    with pytest.raises(ValueError, match="not a packed owner map"):
        unpack_owner(torch.zeros(3, dtype=torch.uint8), (7,))


def allocated(n_experiences: int, n_tasks: int, capacity="equal"):
    model = tiny_model(2 * n_experiences)
    ownership = OwnershipMap(model, n_experiences, capacity)
    g = torch.Generator().manual_seed(1)
    for task in range(n_tasks):
        ownership.allocate(task, [2 * task, 2 * task + 1], generator=g)
    with torch.no_grad():
        model[1].running_mean.normal_(generator=g)
    return model


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "n_experiences, n_tasks, packed",
    [(10, 10, True), (200, 15, True), (30, 16, False), (120, 100, False)],
)
def test_compact_state_dict_loads_back_exactly(n_experiences, n_tasks, packed):
    capacity = "equal" if n_experiences <= 30 else 0.05
    model = allocated(n_experiences, n_tasks, capacity)
    compact = compact_state_dict(model)
    full = model.state_dict()
    assert compact.keys() == full.keys()
    for name in ("0.owner", "5.owner", "7.owner"):
        if packed:
            assert compact[name].dtype == torch.uint8 and compact[name].numel() == math.ceil(full[name].numel() / 2)
        else:  # ids beyond 14 (more than 15 experiences): the int8/int16 map is kept
            assert torch.equal(compact[name], full[name])
    if packed:
        assert len(saved(compact)) < len(saved(full))

    # Saved, loaded, and put in a freshly gated model (as a checkpoint would be).
    loaded = torch.load(io.BytesIO(saved(compact)), weights_only=True)
    fresh = tiny_model(2 * n_experiences)
    OwnershipMap(fresh, n_experiences, capacity)  # owner dtype for n_experiences
    fresh.load_state_dict(loaded)
    again = fresh.state_dict()
    assert again.keys() == full.keys()
    for key in full:
        assert again[key].dtype == full[key].dtype, key
        assert torch.equal(again[key], full[key]), key


def test_twenty_tiny_experiences_with_a_fraction():
    """MIND trains 20 experiences with capacity=0.1 and an upper bound of 100, and evaluates all 20."""
    torch.manual_seed(0)
    bench = toy_class_incremental(n_experiences=20, classes_per_experience=2, per_class=8, test_per_class=4,
                                  image_size=8, seed=0)
    strategy = MIND(
        model=small_cnn(40, width=4), n_experiences=100, capacity=0.1, teacher_epochs=1, train_epochs=1,
        train_mb_size=16, eval_mb_size=200, lr=0.01, teacher_lr=0.01, seed=0,
        evaluator=EvaluationPlugin(*mind_metrics(experience=False, stream=True), loggers=[]),
    )
    for experience in bench.train_stream:
        strategy.train(experience, eval_streams=[])
    assert strategy.state.n_tasks == 20
    for name, layer in strategy.ownership.layers.items():
        owned = set(torch.unique(layer.owner).tolist()) - {FREE}
        assert owned == set(range(20)), name
    results = strategy.eval(bench.test_stream)
    for metric in ("TAw", "TAg", "TaskId"):
        values = [v for k, v in results.items() if metric in k and "Stream" in k]
        assert values and 0.0 <= values[0] <= 1.0


class _CaptureEval(SupervisedPlugin):
    """The strategy's task-agnostic and task-aware answers for every eval minibatch."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def after_eval_iteration(self, strategy, **kwargs):
        p = strategy.last_prediction
        self.batches.append((strategy.eval_task, strategy.mb_x.clone(), p.tag_class.clone(), p.task.clone(),
                             p.taw_class.clone()))


def test_predictor_keeps_owner_ids_of_128_and_more(tmp_path):
    """130 experiences: owners 128..129 need int16; the Predictor must load them as the strategy holds them.

    Training 130 experiences would take minutes, so the state is built directly: every
    experience allocated (He-normal weights) and recorded, as training would leave it.
    """
    n = 130
    bench = toy_class_incremental(n_experiences=n, classes_per_experience=2, per_class=1, test_per_class=3,
                                  image_size=2, seed=0)
    torch.manual_seed(0)

    def model():
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 32, bias=False), nn.ReLU(), nn.Linear(32, 2 * n, bias=False))

    capture = _CaptureEval()
    strategy = MIND(model=model(), n_experiences=n, capacity=0.05, task_inference="max_confidence", temperature=2.0,
                    eval_mb_size=64, seed=0, plugins=[capture], evaluator=None)
    g = torch.Generator().manual_seed(0)
    for task in range(n):
        strategy.ownership.allocate(task, [2 * task, 2 * task + 1], generator=g)
    strategy.state.slices = [[2 * t, 2 * t + 1] for t in range(n)]
    strategy.state.experience_ids = list(range(n))
    strategy.state.bn_snapshots = [{} for _ in range(n)]  # no BatchNorm in this model
    owners = {name: layer.owner.clone() for name, layer in strategy.ownership.layers.items()}
    assert all(o.dtype == torch.int16 for o in owners.values()) and max(int(o.max()) for o in owners.values()) == n - 1
    path = tmp_path / "many.pt"
    save_checkpoint(strategy, path)

    predictor = Predictor.from_checkpoint(path, model())
    for name, layer in predictor.ownership.layers.items():
        assert torch.equal(layer.owner, owners[name]), name  # 128 and 129 did not wrap to -128 and -127
    strategy.eval(bench.test_stream[n - 3:])  # experiences 127, 128 and 129
    assert [b[0] for b in capture.batches] == [n - 3, n - 2, n - 1]
    for task, x, tag_class, chosen, taw_class in capture.batches:
        tag = predictor.predict(x)
        assert torch.equal(tag.classes, tag_class) and torch.equal(tag.tasks, chosen)
        assert torch.equal(predictor.predict(x, task=task).classes, taw_class)


def test_owner_ids_too_wide_for_the_buffer_are_refused_not_wrapped():
    model = tiny_model(10)  # fresh gated layers: int8 owners
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["7.owner"] = torch.full_like(state["7.owner"], 200, dtype=torch.int16)
    with pytest.raises(RuntimeError, match=r"7\.owner: owner ids from 200 to 200 do not fit .*torch\.int8"):
        model.load_state_dict(state)
    set_owner_dtype(model, 201)
    model.load_state_dict(state)
    assert model[7].owner.dtype == torch.int16 and int(model[7].owner.max()) == 200
