"""Cross-task negatives: each source's inputs, the uniform-target term, and what MIND keeps of them."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import make_mind
from torch import nn

from avalanche_mind.core.layers import gated_layers
from avalanche_mind.core.losses import js_divergence, symmetric_kl
from avalanche_mind.core.negatives import (
    FeatureSampler,
    NegativePool,
    mixed_across_classes,
    shuffled_patches,
    transformed,
)
from avalanche_mind.io.checkpoint import load_checkpoint, save_checkpoint
from avalanche_mind.task_id import ScoreStatistics


def test_mixing_pairs_only_different_classes():
    torch.manual_seed(0)
    x = torch.stack([torch.full((1, 4, 4), float(c)) for c in [0, 0, 1, 1, 2, 2, 3, 3]])
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    for _ in range(20):
        mixed = mixed_across_classes(x, y)
        # A pixel of a blend of two images of class c is exactly c only if both were class c.
        assert not any(float(m.flatten()[0]) in {0.0, 1.0, 2.0, 3.0} for m in mixed)


def test_patch_shuffle_keeps_every_pixel_and_moves_them():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    shuffled = shuffled_patches(x)
    assert shuffled.shape == x.shape
    for a, b in zip(x, shuffled):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
    assert not torch.equal(shuffled, x)
    with pytest.raises(ValueError, match="at least 4x4"):
        shuffled_patches(torch.rand(2, 3, 3, 3))


def test_transforms_refuse_non_images():
    with pytest.raises(ValueError, match="needs images"):
        transformed(torch.rand(4, 10), torch.arange(4))


def test_feature_sampler_draws_around_the_stored_class_means():
    torch.manual_seed(0)
    stats = ScoreStatistics()
    means = torch.tensor([[5.0, 0.0, 0.0], [0.0, -5.0, 0.0]])
    positions = torch.arange(2).repeat(500)
    features = means[positions] + 0.5 * torch.randn(1000, 3)
    stats.fit_features(0, features, positions, 2)
    sampler = FeatureSampler(stats, [0], torch.device("cpu"))
    samples = sampler.sample(4000)
    nearest = torch.cdist(samples, means).argmin(1)
    for c in range(2):
        assert torch.allclose(samples[nearest == c].mean(0), means[c], atol=0.15)
    assert len(FeatureSampler(stats, [1], torch.device("cpu"))) == 0  # a task without statistics is skipped


def test_the_term_pushes_towards_uniform_without_touching_running_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 14 * 14, 6)).train()
    running = {k: v.clone() for k, v in net[1].state_dict().items()}
    pool = NegativePool(images=torch.rand(10, 3, 16, 16), transforms=True)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    slice_ = torch.tensor([1, 2, 3])
    loss = pool.loss(net, x, y, slice_, net[3])
    assert float(loss.detach()) >= 2 * math.log(3) - 1e-5  # two input sources, each >= log(slice width)
    loss.backward()
    assert net[3].weight.grad[slice_].abs().sum() > 0 and net[3].weight.grad[[0, 4, 5]].abs().sum() == 0
    for key, value in net[1].state_dict().items():
        assert torch.equal(value, running[key]), f"BatchNorm {key} moved"
    assert float(NegativePool().loss(net, x, y, slice_, net[3])) == 0.0


def test_symmetric_kl_is_the_authors_mean_of_both_kls_and_about_four_times_js():
    torch.manual_seed(0)
    a = torch.randn(64, 10, dtype=torch.float64)
    b = a + 0.01 * torch.randn(64, 10, dtype=torch.float64)
    p, q = a.softmax(1) + 1e-4, b.softmax(1) + 1e-4
    expected = 0.5 * ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1)).mean()
    assert float(symmetric_kl(a, b)) == pytest.approx(float(expected), rel=1e-5)
    assert float(symmetric_kl(a, b) / js_divergence(a, b)) == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("option", [dict(negatives="bogus"), dict(negative_memory=-1), dict(negative_weight=-1.0)])
def test_bad_negative_settings_are_refused(option):
    with pytest.raises(ValueError, match="negative"):
        make_mind(**option)


def test_inverted_negatives_are_stored_per_task_and_isolation_still_holds(class_incremental, tmp_path):
    """Inversion and the rehearsal reference together: what is stored, and experience 0 never moves."""
    stream = class_incremental.train_stream
    strategy = make_mind(negatives="inversion", negative_memory=3, teacher_epochs=2, train_epochs=2)
    strategy.train(stream[0], eval_streams=[])
    weights = {n: l.weight.detach().clone() for n, l in gated_layers(strategy.model)}
    owners = {n: (l.owner == 0).clone() for n, l in gated_layers(strategy.model)}
    strategy.train(stream[1], eval_streams=[])
    # Task 0's store: 3 real images per class (the reference) + 10 rebuilt per class, pixels in [0, 1].
    bank = strategy.state.negative_bank
    assert [len(t) for t in bank] == [2 * 3 + 2 * 10, 2 * 3 + 2 * 10]
    rebuilt = bank[0][2 * 3:]
    assert rebuilt.min() >= 0 and rebuilt.max() <= 1 and rebuilt.std() > 0.01
    log = strategy.negative_log[0]
    assert log["bn_loss_end"] < log["bn_loss_start"]  # the inversion matched the BatchNorm snapshot better
    assert log["accuracy"] > 0.5  # the inverted sub-network takes its rebuilt images for their classes
    for name, layer in gated_layers(strategy.model):
        assert torch.equal(layer.weight.detach()[owners[name]], weights[name][owners[name]])
    # The store survives a checkpoint: a resumed strategy draws from the same negatives.
    path = tmp_path / "ckpt.pt"
    save_checkpoint(strategy, path)
    resumed = make_mind(negatives="inversion", negative_memory=3, teacher_epochs=2, train_epochs=2)
    load_checkpoint(resumed, path)
    assert len(resumed.state.negative_bank) == 2
    for a, b in zip(resumed.state.negative_bank, bank):
        assert torch.equal(a, b)


def test_no_negatives_are_stored_for_the_last_experience():
    strategy = make_mind(n_experiences=1, negative_memory=2)
    from avalanche_mind.data.toy import toy_class_incremental

    stream = toy_class_incremental(n_experiences=1, classes_per_experience=2, seed=0).train_stream
    strategy.train(stream[0], eval_streams=[])
    assert [len(t) for t in strategy.state.negative_bank] == [0]


@pytest.mark.parametrize("negatives", ["transforms", "features"])
def test_each_source_trains_and_keeps_experience_zero(class_incremental, negatives):
    stream = class_incremental.train_stream
    strategy = make_mind(negatives=negatives, teacher_epochs=1, train_epochs=1)
    strategy.train(stream[0], eval_streams=[])
    weights = {n: l.weight.detach().clone() for n, l in gated_layers(strategy.model)}
    owners = {n: (l.owner == 0).clone() for n, l in gated_layers(strategy.model)}
    strategy.train(stream[1], eval_streams=[])
    assert strategy.negatives is None  # released with the experience
    for name, layer in gated_layers(strategy.model):
        assert torch.equal(layer.weight.detach()[owners[name]], weights[name][owners[name]])


def test_packnet_refuses_inversion():
    from avalanche_mind.runner.packnet import PackNetTAg

    with pytest.raises(ValueError, match="GroupNorm"):
        PackNetTAg(model=nn.Linear(2, 2), optimizer=None, n_experiences=2, post_prune_epochs=1, temperature=1.0,
                   negatives="inversion")


def test_domain_incremental_experiences_are_not_each_others_negatives(domain_incremental):
    """Every domain has the same classes: no earlier one is foreign, so "features" trains as no negatives."""
    results = []
    for negatives in ("features", None):
        strategy = make_mind(n_classes=4, n_experiences=3, negatives=negatives, teacher_epochs=1, train_epochs=1)
        for experience in domain_incremental.train_stream[:2]:
            strategy.train(experience, eval_streams=[])
        results.append({k: v.clone() for k, v in strategy.model.state_dict().items()})
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_class_incremental_features_negatives_change_training(class_incremental):
    """The counterpart: with disjoint classes the same option does change what is learned."""
    results = []
    for negatives in ("features", None):
        strategy = make_mind(negatives=negatives, teacher_epochs=1, train_epochs=1)
        for experience in class_incremental.train_stream[:2]:
            strategy.train(experience, eval_streams=[])
        results.append({k: v.clone() for k, v in strategy.model.state_dict().items()})
    assert not all(torch.equal(results[0][k], results[1][k]) for k in results[0])

