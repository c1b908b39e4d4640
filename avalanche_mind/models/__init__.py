"""Backbones: gated ResNet-32 (32x32 and 64x64 inputs) and a small CNN, and the registry that builds them by name."""
from avalanche_mind.models.gresnet import ResNet, gresnet32, gresnet32_64, small_cnn
from avalanche_mind.models.registry import MODEL_NAMES, MODELS, build_model, resolve_model

__all__ = ["MODELS", "MODEL_NAMES", "ResNet", "build_model", "gresnet32", "gresnet32_64", "resolve_model", "small_cnn"]
