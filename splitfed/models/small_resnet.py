"""A small ResNet (ResNet-10 shape, GroupNorm) for grayscale crops of 32 px and up.

Stem, three residual stages of two basic blocks (32, 64, 128 channels; the last two halve
the resolution), and a pooled linear head: five blocks to cut between. The stem strides by
2 on inputs of 32 px and up (the residual stages then work at half the input's resolution).
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(8, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        return self.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


def small_resnet_blocks(shape: tuple[int, int, int], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    channels, height, w = shape
    stride = 2 if min(height, w) >= 32 else 1
    w1, w2, w3 = width, 2 * width, 4 * width
    return [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(channels, w1, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(8, w1), nn.ReLU()
            ),
        ),
        ("layer1", nn.Sequential(BasicBlock(w1, w1, 1), BasicBlock(w1, w1, 1))),
        ("layer2", nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2, 1))),
        ("layer3", nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3, 1))),
        ("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, n_classes))),
    ]
