"""Backbones: gated ResNet-32 (32x32 and 64x64 inputs) and a small CNN."""
from avalanche_mind.models.gresnet import ResNet, gresnet32, gresnet32_64, small_cnn

__all__ = ["ResNet", "gresnet32", "gresnet32_64", "small_cnn"]
