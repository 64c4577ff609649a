"""A compact CNN for small images: the built-in 8x8 digits and 64x128 eye crops alike."""

from __future__ import annotations

from torch import nn


def _pool_if(size: int) -> nn.Module:
    return nn.MaxPool2d(2) if size >= 2 else nn.Identity()


def compact_cnn(shape: tuple[int, int, int], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    """Four blocks: three conv blocks (conv, GroupNorm, ReLU, pool) and a classifier.

    GroupNorm rather than BatchNorm: it has no running statistics, so averaging
    weights across clients (FedAvg) is exact and batch size does not matter.
    """
    c, h, w = shape
    w1, w2, w3 = width, 2 * width, 4 * width
    # pooled sizes after two 2x2 pools, then an adaptive pool to at most 4x4
    h2, w2_ = max(1, h // 4), max(1, w // 4)
    out_h, out_w = min(4, h2), min(4, w2_)
    return [
        ("conv1", nn.Sequential(nn.Conv2d(c, w1, 3, padding=1), nn.GroupNorm(8, w1), nn.ReLU(), _pool_if(h))),
        ("conv2", nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.GroupNorm(8, w2), nn.ReLU(), _pool_if(h // 2))),
        (
            "conv3",
            nn.Sequential(
                nn.Conv2d(w2, w3, 3, padding=1), nn.GroupNorm(8, w3), nn.ReLU(), nn.AdaptiveAvgPool2d((out_h, out_w))
            ),
        ),
        (
            "head",
            nn.Sequential(nn.Flatten(), nn.Linear(w3 * out_h * out_w, 128), nn.ReLU(), nn.Linear(128, n_classes)),
        ),
    ]


def narrow_cnn(
    shape: tuple[int, int, int], n_classes: int, width: int = 32, waist: int = 8
) -> list[tuple[str, nn.Module]]:
    """``cnn`` with a waist: its third block ends in a 1x1 convolution down to ``waist`` channels.

    Built for the first ``--privacy strong`` (cut 3; the preset is ``mobilenet-private`` now): what leaves
    the client is ``waist`` x 4 x 4 numbers per example (128, against 2,048 for ``cnn`` at the same cut), few
    enough that noise drowns what a decoder needs to redraw the input while the classes stay apart (README,
    privacy table).
    """
    blocks = dict(compact_cnn(shape, n_classes, width))
    pooled = blocks["conv3"][-1].output_size
    return [
        ("conv1", blocks["conv1"]),
        ("conv2", blocks["conv2"]),
        ("conv3", nn.Sequential(*blocks["conv3"], nn.Conv2d(4 * width, waist, 1))),
        (
            "head",
            nn.Sequential(
                nn.Flatten(), nn.Linear(waist * pooled[0] * pooled[1], 128), nn.ReLU(), nn.Linear(128, n_classes)
            ),
        ),
    ]


def _double_conv(c_in: int, c_out: int, groups: int = 8) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(groups, c_out),
        nn.ReLU(inplace=True),
    ]


def deep_cnn(shape: tuple[int, int, int], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    """Five blocks, VGG-style: one 3x3 convolution at full resolution, then three stages of two
    3x3 convolutions (32-256 channels), each stage but the last halving the resolution, then a
    global-average-pooled linear head."""
    c = shape[0]
    w1, w2, w3, w4 = width, 2 * width, 4 * width, 8 * width
    return [
        ("conv1", nn.Sequential(nn.Conv2d(c, w1, 3, padding=1), nn.GroupNorm(8, w1), nn.ReLU(), nn.MaxPool2d(2))),
        ("conv2", nn.Sequential(*_double_conv(w1, w2), nn.MaxPool2d(2))),
        ("conv3", nn.Sequential(*_double_conv(w2, w3), nn.MaxPool2d(2))),
        ("conv4", nn.Sequential(*_double_conv(w3, w4))),
        ("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w4, n_classes))),
    ]
