"""Backbones by name: the one registry the command line and the comparison runner build from.

Every builder returns the plain network (Conv2d/Linear, BatchNorm), the copy the
baselines train; :func:`build_model` gates it for MIND. Gating draws no random
numbers, so MIND and the baselines start from the same code and the same weights.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from torch import nn

from avalanche_mind.core.layers import gate_model, ungate
from avalanche_mind.models.gresnet import ResNet, gresnet32, gresnet32_64, small_cnn
from avalanche_mind.models.vit import vit
from avalanche_mind.settings import MODEL_NAMES, check_names


def _resnet(num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    """The CIFAR ResNet with any ``blocks_per_stage``/``widths``/``stem_stride`` (5 blocks: ResNet-32)."""
    return ResNet(num_classes, in_channels=in_channels, **kwargs)


def _gresnet32(num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    return ungate(gresnet32(num_classes=num_classes, in_channels=in_channels, **kwargs))


def _gresnet32_64(num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    return ungate(gresnet32_64(num_classes=num_classes, in_channels=in_channels, **kwargs))


def _small_cnn(num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    return ungate(small_cnn(num_classes, in_channels=in_channels, **kwargs))


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "gresnet32": _gresnet32,
    "gresnet32_64": _gresnet32_64,
    "small_cnn": _small_cnn,
    "resnet": _resnet,
    "vit": vit,
}
"""``builder(num_classes, in_channels, **kwargs)`` -> the plain (ungated) network."""

check_names("models.registry.MODELS", ("auto", *MODELS), MODEL_NAMES)  # MODEL_NAMES: what ``--model`` accepts


def resolve_model(name: str, image_size: int = 32) -> str:
    """The registered name ``name`` stands for (``auto``: by input size); ValueError for an unknown one."""
    if name == "auto":
        return "gresnet32_64" if image_size >= 64 else "gresnet32"
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return name


def build_model(name: str, num_classes: int, in_channels: int = 3, *, image_size: int = 32, gated: bool = True,
                **kwargs: Any) -> nn.Module:
    """The backbone registered as ``name``: gated for MIND, or (``gated=False``) plain for a baseline."""
    model = MODELS[resolve_model(name, image_size)](num_classes, in_channels, **kwargs)
    return gate_model(model) if gated else model
