"""Gated ResNet-32, the paper's backbone: 16/32/64 channels, option-A shortcuts, no biases."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from avalanche_mind.core.layers import gate_model, he_normal_


class _OptionAShortcut(nn.Module):
    """Parameter-free shortcut: subsample spatially, zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = _OptionAShortcut(in_channels, out_channels, stride) if needs_projection else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet with ``3 * blocks_per_stage`` basic blocks."""

    def __init__(
        self, num_classes: int, blocks_per_stage: int = 5, widths=(16, 32, 64), in_channels: int = 3, stem_stride: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, 2 if (i > 0 and b == 0) else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(channels, num_classes, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                he_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def gresnet32(num_classes: int = 100, in_channels: int = 3) -> ResNet:
    """Gated ResNet-32 for 32x32 inputs (about 0.47M parameters with 100 classes)."""
    return gate_model(ResNet(num_classes, blocks_per_stage=5, in_channels=in_channels))


def gresnet32_64(num_classes: int = 200, in_channels: int = 3) -> ResNet:
    """Gated ResNet-32 for 64x64 inputs (TinyImageNet, CORe50).

    The stem convolution has stride 2, so the three stages see 32x32 maps as in the
    CIFAR network: same parameter count, same per-image cost as on 32x32 inputs.
    """
    return gate_model(ResNet(num_classes, blocks_per_stage=5, in_channels=in_channels, stem_stride=2))


def small_cnn(num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Sequential:
    """A small gated CNN (two conv blocks) for quick CPU runs and tests."""
    return gate_model(
        nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, num_classes, bias=False),
        )
    )
