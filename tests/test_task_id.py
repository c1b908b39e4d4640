"""Task identification: the rules, the training-data statistics, zero start, rotation rejection."""
from __future__ import annotations

import pytest
import torch
from helpers import make_mind

from avalanche_mind import MIND, PAPER_SETTINGS, small_cnn
from avalanche_mind.core.layers import batchnorm_modules
from avalanche_mind.core.snapshots import frozen_running_statistics
from avalanche_mind.core.state import MINDState
from avalanche_mind.inference.bank import SubnetworkBank, predict
from avalanche_mind.inference.predictor import Predictor
from avalanche_mind.io.checkpoint import save_checkpoint
from avalanche_mind.task_id import (
    ScoreStatistics,
    choose_task,
    rotations,
    task_scores,
    uniform_target_loss,
)
from avalanche_mind.task_id.gather import collect_statistics
from avalanche_mind.task_id.statistics import nearest_class_distance, score_pair

F_DIM = 4


def _statistics(own, foreign):
    """Statistics whose task t has score vectors ``own[t]`` on its own inputs and ``foreign[t]`` on others,
    and a feature model with one class mean at the origin (identity precision)."""
    stats = ScoreStatistics()
    for t, (mine, other) in enumerate(zip(own, foreign)):
        stats.add_task()
        stats.update(t, "own", torch.tensor(mine, dtype=torch.float64))
        stats.update(t, "foreign", torch.tensor(other, dtype=torch.float64))
        stats.sums[f"features.{t}.means"] = torch.zeros(1, F_DIM, dtype=torch.float64)
        stats.sums[f"features.{t}.precision"] = torch.eye(F_DIM, dtype=torch.float64)
    return stats


def _features(distance):
    """A feature vector at ``distance`` from the origin."""
    f = torch.zeros(1, F_DIM)
    f[0, 0] = distance
    return f


def test_zscore_compares_each_task_with_its_own_inputs():
    # Task 1 is always more confident than task 0 on raw max-softmax; on its own
    # inputs it is far more confident still, so a moderately confident answer is unusual for it.
    slice0 = torch.tensor([[2.0, 0.0]])  # log max softmax about -0.13
    slice1 = torch.tensor([[3.0, 0.0]])  # about -0.05
    assert choose_task([slice0, slice1], 1.0, "max_confidence").tolist() == [1]
    own0 = [[1.0, 1.5, -1.0], [2.0, 2.2, -2.0], [3.0, 3.1, -3.0]]  # log max softmax -0.5, -0.2, -0.1: lowish
    own1 = [[9.0, 9.0001, -1.0], [10.0, 10.0001, -2.0], [11.0, 11.0002, -3.0]]  # almost exactly 0: sharp
    stats = _statistics([own0, own1], [[[0.0, 1.0, -5.0], [0.5, 1.2, -6.0]]] * 2)
    features = [_features(2.0), _features(2.0)]  # the same, typical feature distance for both
    assert choose_task([slice0, slice1], 1.0, "zscore", stats, features).tolist() == [0]
    # A feature vector far from every class of task 0 tips the choice back.
    assert choose_task([slice0, slice1], 1.0, "zscore", stats, [_features(40.0), _features(2.0)]).tolist() == [1]


def test_likelihood_ratio_uses_foreign_statistics():
    # Both tasks' own inputs look alike; task 1's foreign inputs look like this input, task 0's do not.
    own = [[[5.0, 5.1, -1.0], [6.0, 6.1, -1.5], [5.5, 5.7, -1.2], [6.5, 6.6, -0.8]]] * 2
    foreign0 = [[0.0, 2.0, -4.0], [0.5, 2.1, -4.5], [1.0, 2.3, -3.8], [0.2, 2.2, -4.2]]
    foreign1 = [[4.0, 4.4, -1.6], [4.5, 4.8, -1.4], [5.0, 5.5, -1.5], [4.2, 4.5, -1.7]]
    stats = _statistics(own, [foreign0, foreign1])
    x = torch.tensor([[4.6, 0.0]])
    features = [_features(1.5), _features(1.5)]
    scores = task_scores([x, x], 1.0, "likelihood_ratio", stats, features)
    assert scores[0, 0] > scores[0, 1]
    assert choose_task([x, x], 1.0, "likelihood_ratio", stats, features).tolist() == [0]


def test_shared_foreign_lets_the_newest_task_borrow_what_foreign_inputs_look_like():
    """Task 1 has seen no later experience; the foreign inputs of task 0, in task 0's own whitened
    coordinates, sit well below its own: an input that low for task 1 is judged foreign to it too."""
    g = torch.Generator().manual_seed(0)
    centre0 = torch.tensor([5.0, 6.0, -1.0], dtype=torch.float64)
    centre1 = torch.tensor([9.0, 9.5, -1.0], dtype=torch.float64)
    own0 = torch.randn(200, 3, generator=g, dtype=torch.float64) + centre0
    own1 = torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.5 + centre1
    stats = _statistics([own0.tolist(), own1.tolist()], [[[0.0, 0.0, 0.0]]] * 2)
    stats.sums["foreign.count"].zero_(), stats.sums["foreign.sum"].zero_(), stats.sums["foreign.outer"].zero_()
    foreign0 = own0[:100] - 3.0  # later experiences' inputs, as sub-network 0 scores them
    stats.update(0, "foreign", foreign0)
    stats.update(0, "foreign_white", stats.whiten(0, foreign0))
    # Typical of task 0's own inputs for sub-network 0, and 3 below task 1's own for sub-network 1
    # (still more confident than anything sub-network 0 says: the paper's rule picks task 1).
    slice0, slice1 = torch.tensor([[5.0, -30.0]]), torch.tensor([[6.0, -30.0]])
    features = [_features(1.0), _features(4.0)]
    assert choose_task([slice0, slice1], 1.0, "max_logit").tolist() == [1]
    white = stats.whiten(0, own0)
    assert white.mean(0).abs().max() < 1e-6  # own inputs are centred in their own coordinates
    assert choose_task([slice0, slice1], 1.0, "shared_foreign", stats, features).tolist() == [0]


def test_statistics_rules_refuse_missing_statistics():
    logits = [torch.randn(4, 3), torch.randn(4, 3)]
    with pytest.raises(ValueError, match="needs score statistics"):
        choose_task(logits, 1.0, "likelihood_ratio", ScoreStatistics())
    stats = _statistics([[[1.0, 2.0, 0.0], [2.0, 3.0, 1.0]]] * 2, [[[0.0, 1.0, 0.0]]] * 2)
    with pytest.raises(ValueError, match="penultimate features"):
        choose_task(logits, 1.0, "zscore", stats)
    with pytest.raises(ValueError, match="unknown task_inference"):
        choose_task(logits, 1.0, "max-softmax")


def test_cheap_scores():
    a = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    b = torch.tensor([[3.0, 3.0, 3.0], [0.0, 0.0, 2.0]])
    assert choose_task([a, b], 1.0, "max_logit").tolist() == [0, 1]
    # energy (logsumexp): three logits of 3 outweigh one of 4
    assert choose_task([a, b], 1.0, "energy").tolist() == [1, 1]
    assert torch.allclose(score_pair(a)[:, 0], torch.tensor([4.0, 1.0]))


def test_collect_statistics_counts_own_rotated_and_foreign_inputs():
    slices = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]

    def run(x, task):
        g = torch.Generator().manual_seed(task)
        return torch.randn(len(x), 5, generator=g), torch.randn(len(x), 6, generator=g)

    stats = ScoreStatistics()
    g = torch.Generator().manual_seed(0)
    data = {t: [(torch.randn(5, 1, 4, 4, generator=g), torch.tensor([0, 1, 0, 1, 1]) + 2 * t),
                (torch.randn(3, 1, 4, 4, generator=g), torch.tensor([1, 0, 0]) + 2 * t)] for t in range(3)}
    collect_statistics(stats, run, slices, 0, lambda: iter(data[0]))
    collect_statistics(stats, run, slices, 1, lambda: iter(data[1]))
    assert stats.complete(2) and not stats.complete(3)
    collect_statistics(stats, run, slices, 2, lambda: iter(data[2]))
    counts = {k: stats.sums[f"{k}.count"].tolist() for k in ("own", "rotated", "foreign", "foreign_white")}
    assert counts == {"own": [8, 8, 8], "rotated": [8, 8, 8], "foreign": [16, 8, 0], "foreign_white": [16, 8, 0]}
    assert stats.sums["features.0.means"].shape == (2, 5) and stats.sums["features.2.precision"].shape == (5, 5)
    restored = ScoreStatistics(stats.state_dict())
    assert all(torch.equal(restored.sums[k], v) for k, v in stats.sums.items())


def test_feature_distance_is_the_mahalanobis_distance_to_the_nearest_class_mean():
    stats = ScoreStatistics()
    stats.add_task()
    features = torch.tensor([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0], [10.0, 2.0]])
    stats.fit_features(0, features, torch.tensor([0, 0, 1, 1]), 2)
    means = stats.sums["features.0.means"]
    assert torch.allclose(means, torch.tensor([[0.0, 1.0], [10.0, 1.0]], dtype=torch.float64))
    precision = stats.sums["features.0.precision"]
    x = torch.tensor([[9.0, 1.0], [1.0, 1.0]])
    d = nearest_class_distance(x, means, precision)
    expected = torch.sqrt(torch.tensor([1.0, 1.0]) * precision[0, 0].float())
    assert torch.allclose(d, expected, atol=1e-5)


def test_rotations_turn_each_input_by_90_180_or_270_degrees():
    x = torch.arange(6 * 9, dtype=torch.float32).view(6, 1, 3, 3)
    r = rotations(x)
    for i in range(6):
        assert torch.equal(r[i], torch.rot90(x[i], i % 3 + 1, dims=(1, 2)))
    with pytest.raises(ValueError, match="square images"):
        rotations(torch.zeros(2, 1, 3, 4))


def test_uniform_target_loss_is_smallest_for_a_flat_slice():
    flat, peaked = torch.zeros(2, 4), torch.tensor([[5.0, 0, 0, 0]] * 2)
    assert uniform_target_loss(flat) < uniform_target_loss(peaked)
    assert uniform_target_loss(flat).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_rotated_pass_leaves_batchnorm_running_statistics_unchanged():
    model = small_cnn(4).train()
    before = {n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
              for n, m in batchnorm_modules(model)}
    with frozen_running_statistics(model):
        model(torch.randn(8, 3, 16, 16))
    for name, module in batchnorm_modules(model):
        mean, var, tracked = before[name]
        assert torch.equal(module.running_mean, mean) and torch.equal(module.running_var, var)
        assert int(module.num_batches_tracked) == tracked and module.momentum == 0.1
    model(torch.randn(8, 3, 16, 16))  # a normal pass does move them: the check above can fail
    assert not torch.equal(batchnorm_modules(model)[0][1].running_mean, before[batchnorm_modules(model)[0][0]][0])


# ------------------------------------------------------------------ with MIND


@pytest.mark.parametrize("self_distillation", [False, True])
@pytest.mark.parametrize("new_weights", ["zero", "random"])
def test_zero_start_gives_new_weights_the_value_zero(class_incremental, new_weights, self_distillation):
    # No distillation epochs: experience 1's weights are exactly what allocation gave them.
    strategy = make_mind(new_weights=new_weights, self_distillation=self_distillation,
                         teacher_epochs=0 if self_distillation else 1, train_epochs=0)
    strategy.train(class_incremental.train_stream[0], eval_streams=[])
    strategy.train(class_incremental.train_stream[1], eval_streams=[])
    for layer in strategy.ownership.layers.values():
        new = layer.weight[layer.owner == 1]
        if new_weights == "zero":
            assert new.abs().sum() == 0
        else:
            assert (new != 0).float().mean() > 0.9
        assert (layer.weight[layer.owner == 0] != 0).float().mean() > 0.9  # task 0 starts from random


def test_bn_first_task_only_trains_the_student_with_snapshot_0(class_incremental):
    """The ablation's bug: the guard copied the teacher's BatchNorm affine terms, not snapshot 0's."""
    strategy = make_mind(self_distillation=True, bn_per_task=False, beta=0.0, teacher_epochs=2, train_epochs=2)
    strategy.train(class_incremental.train_stream[0], eval_streams=[])
    strategy.train(class_incremental.train_stream[1], eval_streams=[])
    first, second = strategy.state.bn_snapshots
    for key, value in first.items():
        assert torch.equal(second[key], value), key
    live = {f"{n}.{k}": v for n, m in batchnorm_modules(strategy.model) for k, v in m.state_dict().items()}
    assert all(torch.equal(live[k], v) for k, v in first.items())


def test_paper_settings_are_the_papers_method():
    strategy = MIND(model=small_cnn(4), n_experiences=2, **PAPER_SETTINGS)
    config = strategy.config
    assert (config.task_inference, config.rejection, config.new_weights, config.self_distillation) == (
        "max_confidence", None, "zero", False)
    with pytest.raises(ValueError, match="unknown rejection"):
        MIND(model=small_cnn(4), n_experiences=2, rejection="rotations")
    with pytest.raises(ValueError, match="unknown new_weights"):
        MIND(model=small_cnn(4), n_experiences=2, new_weights="he")


@pytest.fixture(scope="module")
def statistics_run(class_incremental, tmp_path_factory):
    strategy = make_mind(rejection="rotation", task_inference="likelihood_ratio", n_experiences=3,
                         teacher_epochs=2, train_epochs=2)
    for experience in class_incremental.train_stream[:3]:
        strategy.train(experience, eval_streams=[])
    path = tmp_path_factory.mktemp("task_id") / "mind.pt"
    save_checkpoint(strategy, path)
    return strategy, path


def test_statistics_are_gathered_from_training_data_as_it_streams_by(statistics_run, class_incremental):
    strategy, _ = statistics_run
    stats = strategy.state.score_statistics
    sizes = [len(e.dataset) for e in class_incremental.train_stream[:3]]
    assert stats.sums["own.count"].tolist() == sizes
    assert stats.sums["rotated.count"].tolist() == sizes
    # task t's foreign inputs: the training inputs of every later experience
    assert stats.sums["foreign.count"].tolist() == [sizes[1] + sizes[2], sizes[2], 0]


def test_statistics_travel_in_checkpoints_and_the_predictor_agrees(statistics_run, class_incremental):
    strategy, path = statistics_run
    state = MINDState()
    state.load_state_dict(strategy.state.state_dict())
    assert all(torch.equal(state.score_statistics.sums[k], v) for k, v in strategy.state.score_statistics.sums.items())
    predictor = Predictor.from_checkpoint(path, small_cnn(10))
    assert predictor.task_inference == "likelihood_ratio"
    strategy.model.eval()
    x = torch.cat([class_incremental.test_stream[t].dataset[i][0][None] for t in range(3) for i in range(4)])
    bank = SubnetworkBank(strategy.model, strategy.ownership, strategy.state.bn_snapshots, 3, True)
    slices = [strategy.output_slice(t) for t in range(3)]
    expected = predict(bank, x, slices, strategy.temperature, "likelihood_ratio",
                       statistics=strategy.state.score_statistics)
    out = predictor.predict(x)
    assert torch.equal(out.classes, expected.tag_class) and torch.equal(out.tasks, expected.task)
    with pytest.raises(ValueError, match="needs score statistics"):
        Predictor(small_cnn(10), MINDState(slices=[[0, 1]], experience_ids=[0], bn_snapshots=[{}]),
                  n_experiences=3, task_inference="zscore")


def test_one_task_choice_implementation_serves_evaluation_predictor_and_export():
    """Evaluation (and the Predictor, through the same ``predict``) and the exported graph call the same
    function, and every rule is a branch of it: a rule added elsewhere, or to one path only, fails here."""
    import ast
    from pathlib import Path

    import avalanche_mind.export.graph as graph
    import avalanche_mind.inference.bank as bank
    from avalanche_mind.task_id import TASK_INFERENCE_RULES, rules

    assert graph.choose_with is rules.choose_with and bank.choose_task is rules.choose_task
    source = Path(rules.__file__).read_text()
    for rule in TASK_INFERENCE_RULES:
        assert f'"{rule}"' in source.split("def scores_with")[1] or rule == "entropy", rule
    # Each rule gives a choice from the same statistics, through the constants the graph stores.
    stats = _statistics([[[1.0, 2.0, -1.0], [2.0, 3.0, -2.0], [1.5, 2.2, -1.2]]] * 2,
                        [[[0.0, 1.0, -3.0], [0.5, 1.5, -4.0], [0.2, 1.1, -3.5]]] * 2)
    logits = [torch.randn(5, 3, generator=torch.Generator().manual_seed(t)) for t in range(2)]
    features = [torch.randn(5, F_DIM, generator=torch.Generator().manual_seed(9 + t)) for t in range(2)]
    for rule in TASK_INFERENCE_RULES:
        constants = rules.rule_constants(rule, stats, 2)
        chosen = choose_task(logits, 1.0, rule, stats, features)
        assert torch.equal(chosen, rules.choose_with(rule, 1.0, logits, features, constants)), rule
    # No other module of the package defines a task-choice function.
    package = Path(rules.__file__).resolve().parent.parent
    names = {"choose_task", "choose_with", "scores_with", "task_scores", "rule_constants", "entropy_choice"}
    for path in package.rglob("*.py"):
        if path.resolve() == Path(rules.__file__).resolve():
            continue
        defined = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
        assert not defined & names, (path, defined & names)
