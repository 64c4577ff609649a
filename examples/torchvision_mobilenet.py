"""A model of your own for splitfed, made from a torchvision model: MobileNetV3-Small.

Use it with any protocol that trains an image model:

    splitfed run sflv1 --clients 2 --data PATH/TO/eye-crops --model examples/torchvision_mobilenet.py:mobilenet_v3
    splitfed run sflv1 --clients 2 --model examples/torchvision_mobilenet.py:mobilenet_v3 --cut 2

splitfed calls ``mobilenet_v3(shape, n_classes)`` in every process (server and clients)
with the shape of one example, ``(channels, height, width)``, and the number of classes.
It returns the model as ordered blocks; ``--cut N`` gives the client the first N blocks and
the server the rest, so each block should be a sensible place to cut. Without ``--cut`` the
client keeps ``mobilenet_v3.default_cut`` blocks.

Two changes make a torchvision model fit federated split learning:
- its first convolution takes the data's channels (1 for grayscale crops);
- every BatchNorm becomes a GroupNorm: FedAvg averages weights, and the average of
  BatchNorm's running statistics over clients means little.
No pretrained weights are loaded (nothing is downloaded); every party builds the same
initial weights from ``--seed``.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v3_small


def _group_norms(module: nn.Module) -> None:
    """Replace every BatchNorm2d under ``module`` by a GroupNorm over the same channels, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
            setattr(module, name, nn.GroupNorm(groups, channels))
        else:
            _group_norms(child)


def mobilenet_v3(shape: tuple[int, ...], n_classes: int) -> list[tuple[str, nn.Module]]:
    if len(shape) != 3:
        raise ValueError(f"mobilenet_v3 takes images (channels, height, width), not examples of shape {shape}")
    net = mobilenet_v3_small(weights=None, num_classes=n_classes)
    stem = net.features[0]
    stem[0] = nn.Conv2d(shape[0], stem[0].out_channels, 3, stride=2, padding=1, bias=False)
    _group_norms(net)
    f = net.features
    return [
        ("stem", f[0]),
        ("stage1", nn.Sequential(*f[1:4])),
        ("stage2", nn.Sequential(*f[4:9])),
        ("stage3", nn.Sequential(*f[9:])),
        ("head", nn.Sequential(net.avgpool, nn.Flatten(), net.classifier)),
    ]


mobilenet_v3.default_cut = 1  # the client keeps the stem
