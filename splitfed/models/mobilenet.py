"""A small MobileNet-style net (depthwise-separable convolutions) for grayscale crops.

Five blocks, each a sensible place to cut: a strided stem, three stages that each double
the channels and halve the resolution, and a pooled linear head. GroupNorm rather than
BatchNorm: FedAvg averages weights, and GroupNorm has no running statistics whose average
would mean nothing.
"""

from __future__ import annotations

from torch import nn


def separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 convolution (MobileNet v1's building block)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.GroupNorm(min(8, c_in), c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.GroupNorm(8, c_out),
        nn.ReLU(inplace=True),
    )


def mobilenet_blocks(shape: tuple[int, int, int], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    channels = shape[0]
    return [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, width), nn.ReLU()
            ),
        ),
        ("stage1", nn.Sequential(separable(width, 2 * width, 1), separable(2 * width, 2 * width, 2))),
        ("stage2", nn.Sequential(separable(2 * width, 4 * width, 1), separable(4 * width, 4 * width, 2))),
        ("stage3", nn.Sequential(separable(4 * width, 8 * width, 1), separable(8 * width, 8 * width, 2))),
        (
            "head",
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * width, n_classes)),
        ),
    ]


def mobilenet_narrow(
    shape: tuple[int, int, int], n_classes: int, width: int = 32, waist: int = 8
) -> list[tuple[str, nn.Module]]:
    """``mobilenet`` with a waist: its last stage ends in an average pool to at most 4x4 and a 1x1
    convolution down to ``waist`` channels, and the head is a small MLP on those numbers.

    A candidate for ``--privacy strong`` at its default cut 4 (after the waist; README, "On the realistic
    proxy": the waist cost accuracy, and the preset is ``mobilenet-private``): what leaves the client is at
    most ``waist`` x 4 x 4 numbers per example (128 from 64x128 crops, 64 from 32x64), where ``mobilenet``
    at its default cut sends ``width`` channels at half the input's resolution (65,536 from 64x128).
    """
    blocks = dict(mobilenet_blocks(shape, n_classes, width))
    h, w = shape[1], shape[2]
    for _ in range(4):  # the stem and three stages each halve the resolution (stride 2, padding 1)
        h, w = (h + 1) // 2, (w + 1) // 2
    out_h, out_w = min(4, h), min(4, w)
    return [
        ("stem", blocks["stem"]),
        ("stage1", blocks["stage1"]),
        ("stage2", blocks["stage2"]),
        (
            "stage3",
            nn.Sequential(*blocks["stage3"], nn.AdaptiveAvgPool2d((out_h, out_w)), nn.Conv2d(8 * width, waist, 1)),
        ),
        (
            "head",
            nn.Sequential(nn.Flatten(), nn.Linear(waist * out_h * out_w, 128), nn.ReLU(), nn.Linear(128, n_classes)),
        ),
    ]


def mobilenet_private(shape: tuple[int, int, int], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    """``mobilenet`` whose client half can end after the pool: six blocks, the fifth the global average pool
    and a LayerNorm without weights, the sixth the server's head (a LayerNorm, then the linear classifier).

    Built for ``--privacy strong`` at its default cut 5: what leaves the client is ``8 x width`` numbers per
    example (256) at any input size, with nothing spatial left, each example centred and scaled alike so
    that ``--dp-clip`` brings every one to the same norm and ``--dp-noise`` drowns the same share of each.
    Without a defence it computes what ``mobilenet`` computes but for the two LayerNorms.
    """
    blocks = dict(mobilenet_blocks(shape, n_classes, width))
    pool, flat, linear = list(blocks["head"])
    return [
        ("stem", blocks["stem"]),
        ("stage1", blocks["stage1"]),
        ("stage2", blocks["stage2"]),
        ("stage3", blocks["stage3"]),
        ("pool", nn.Sequential(pool, flat, nn.LayerNorm(linear.in_features, elementwise_affine=False))),
        ("head", nn.Sequential(nn.LayerNorm(linear.in_features), linear)),
    ]
