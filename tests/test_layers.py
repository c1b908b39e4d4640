"""Gated layers and gate_model: any Conv2d/Linear model, weights kept, masks applied."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from avalanche_mind import FREE, GatedConv2d, GatedLinear, gate_model, gated_layers, gresnet32, gresnet32_64
from avalanche_mind.core.ownership import OwnershipMap


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)), (4, 3, 2, 2)),
        (lambda: torchvision.models.resnet18(num_classes=7), (2, 3, 32, 32)),
    ],
)
def test_gate_model_keeps_function_and_weights(build, shape):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape)
    expected = model(x)
    gate_model(model)
    layers = dict(gated_layers(model))
    assert layers and all(isinstance(l, (GatedConv2d, GatedLinear)) for l in layers.values())
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in model.modules())
    torch.testing.assert_close(model(x), expected)  # dense until a sub-network is activated
    assert all(bool((l.owner == FREE).all()) for l in layers.values())


def test_mask_gates_the_forward_pass():
    layer = gate_model(nn.Sequential(nn.Linear(4, 3, bias=False)))[0]
    x = torch.randn(5, 4)
    layer.mask = torch.zeros_like(layer.weight)
    layer.mask[1] = 1
    out = layer(x)
    assert torch.all(out[:, [0, 2]] == 0) and torch.all(out[:, 1] != 0)


def test_gresnet32_size_and_shapes():
    model = gresnet32(num_classes=100)
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < n_params < 0.48e6  # the paper's 0.47M
    assert all(l.bias is None for _, l in gated_layers(model))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert gresnet32_64(num_classes=200)(torch.randn(2, 3, 64, 64)).shape == (2, 200)


def test_owner_dtype_grows_with_experiences():
    model = gate_model(nn.Sequential(nn.Linear(400, 10)))
    assert OwnershipMap(model, 100).layers["0"].owner.dtype == torch.int8
    assert OwnershipMap(model, 200).layers["0"].owner.dtype == torch.int16
