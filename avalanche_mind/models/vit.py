"""A small Vision Transformer for the CPU glyph presets: torchvision's ``VisionTransformer``, any input channels.

MIND gates its attention projections, MLP and head, and keeps its LayerNorms, class
token and position embedding per experience (see :mod:`avalanche_mind.core.snapshots`).
"""
from __future__ import annotations

from torch import nn
from torchvision.models import VisionTransformer


def vit(num_classes: int, in_channels: int = 3, *, image_size: int = 16, patch_size: int = 4, num_layers: int = 4,
        num_heads: int = 4, hidden_dim: int = 64, mlp_dim: int = 128) -> VisionTransformer:
    """torchvision's ViT (no dropout), its patch projection taking ``in_channels``; plain (ungated)."""
    model = VisionTransformer(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                              num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim, num_classes=num_classes)
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
    return model


__all__ = ["vit"]
