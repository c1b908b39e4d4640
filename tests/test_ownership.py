"""The ownership map: disjoint sub-networks of the configured size, classifier rows per class."""
from __future__ import annotations

import torch

from avalanche_mind import FREE
from avalanche_mind.core.layers import gated_layers


def test_owners_are_disjoint_and_sized(trained_run):
    strategy, _ = trained_run
    n = strategy.n_experiences
    classifier = strategy.ownership.classifier_name
    for name, layer in gated_layers(strategy.model):
        owner = layer.owner
        assert owner.dtype == torch.int8
        assert int(owner.min()) >= FREE and int(owner.max()) < n
        if name == classifier:
            continue
        counts = torch.bincount((owner[owner != FREE]).long().view(-1), minlength=n)
        assert counts.tolist() == [layer.weight.numel() // n] * n, name


def test_sub_networks_are_nested_with_weight_sharing(trained_run):
    strategy, _ = trained_run
    ownership = strategy.ownership
    for layer in ownership.layers.values():
        masks = [ownership.subnetwork_mask(layer, t, weight_sharing=True) for t in range(5)]
        for earlier, later in zip(masks, masks[1:]):
            assert bool((later >= earlier).all()) and later.sum() > earlier.sum()
        exclusive = [ownership.subnetwork_mask(layer, t, weight_sharing=False) for t in range(5)]
        assert float(torch.stack(exclusive).sum(0).max()) <= 1.0  # disjoint


def test_classifier_rows_are_the_experience_classes(trained_run, class_incremental):
    strategy, _ = trained_run
    classifier = strategy.ownership.classifier
    for task, experience in enumerate(class_incremental.train_stream):
        classes = sorted(experience.classes_in_this_experience)
        assert strategy.state.slices[task] == classes
        rows = torch.nonzero((classifier.owner == task).all(dim=1)).view(-1).tolist()
        assert rows == classes
        assert int((classifier.owner == task).sum()) == len(classes) * classifier.in_features


def test_free_weights_are_zero(trained_run):
    strategy, _ = trained_run
    n_free = 0
    for _, layer in gated_layers(strategy.model):
        free = layer.owner == FREE
        n_free += int(free.sum())
        assert bool((layer.weight.detach()[free] == 0).all())
    assert n_free > 0  # equal capacity leaves the remainder FREE: the check is not vacuous


def test_same_seed_same_ownership(class_incremental):
    from helpers import make_mind

    maps = []
    for _ in range(2):
        strategy = make_mind(teacher_epochs=1, train_epochs=1)
        strategy.train(class_incremental.train_stream[0], eval_streams=[])
        maps.append([l.owner.clone() for _, l in gated_layers(strategy.model)])
    assert all(torch.equal(a, b) for a, b in zip(*maps))
