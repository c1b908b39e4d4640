"""Distillation losses: zero when teacher and student agree, positive otherwise."""
from __future__ import annotations

import math

import pytest
import torch

from avalanche_mind.inference.bank import choose_task
from avalanche_mind.core.losses import DISTILL_LOSSES, js_divergence


@pytest.mark.parametrize("name", sorted(DISTILL_LOSSES))
def test_losses_vanish_only_on_agreement(name):
    torch.manual_seed(0)
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    loss = DISTILL_LOSSES[name]
    assert float(loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(a, b)) > 1e-3


def test_js_is_symmetric_and_bounded():
    torch.manual_seed(0)
    a, b = torch.randn(16, 10) * 5, torch.randn(16, 10) * 5
    assert float(js_divergence(a, b)) == pytest.approx(float(js_divergence(b, a)), rel=1e-5)
    assert float(js_divergence(a, b)) <= math.log(2) + 1e-6


def test_task_choice_rules():
    confident = torch.tensor([[5.0, 0.0, 0.0]])
    flat = torch.tensor([[0.1, 0.0, 0.0]])
    assert choose_task([flat, confident], temperature=1.0, rule="max_confidence").tolist() == [1]
    # entropy rule: of the two most confident, the lower-entropy distribution wins
    peaked_pair = torch.tensor([[4.0, 4.0, -9.0]])  # max prob ~0.5, entropy ~log 2
    spread = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # max prob ~0.51, high entropy
    assert choose_task([peaked_pair, spread], 1.0, "max_confidence").tolist() == [1]
    assert choose_task([peaked_pair, spread], 1.0, "entropy").tolist() == [0]
