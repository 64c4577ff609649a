"""A model of your own for splitfed: a small MobileNet-style net for grayscale crops.

Use it with any protocol that trains an image model:

    splitfed run sflv1 --clients 2 --data PATH/TO/eye-crops --model examples/mobilenet.py:mobilenet
    splitfed run sflv1 --clients 2 --model examples/mobilenet.py:mobilenet --cut 2

splitfed calls ``mobilenet(shape, n_classes)`` in every process (server and clients) with
the shape of one example, ``(channels, height, width)``, and the number of classes. It
returns the model as ordered blocks; ``--cut N`` gives the client the first N blocks and
the server the rest, so each block should be a sensible place to cut. Without ``--cut``
the client keeps ``mobilenet.default_cut`` blocks.

GroupNorm rather than BatchNorm: FedAvg averages weights, and GroupNorm has no running
statistics whose average would mean nothing.
"""

from __future__ import annotations

from torch import nn


def _separable(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 convolution (MobileNet v1's building block)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
        nn.GroupNorm(min(8, c_in), c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.GroupNorm(8, c_out),
        nn.ReLU(inplace=True),
    )


def mobilenet(shape: tuple[int, ...], n_classes: int, width: int = 32) -> list[tuple[str, nn.Module]]:
    if len(shape) != 3:
        raise ValueError(f"mobilenet takes images (channels, height, width), not examples of shape {shape}")
    channels = shape[0]
    return [
        (
            "stem",
            nn.Sequential(
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, width), nn.ReLU()
            ),
        ),
        ("stage1", nn.Sequential(_separable(width, 2 * width, 1), _separable(2 * width, 2 * width, 2))),
        ("stage2", nn.Sequential(_separable(2 * width, 4 * width, 1), _separable(4 * width, 4 * width, 2))),
        ("stage3", nn.Sequential(_separable(4 * width, 8 * width, 1), _separable(8 * width, 8 * width, 2))),
        (
            "head",
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(8 * width, n_classes)),
        ),
    ]


mobilenet.default_cut = 1  # the client keeps the stem: its activations are 4x smaller than the image per channel
