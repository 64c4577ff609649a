"""ResNet-18 from torchvision, adapted to any channel count and to small inputs.

Blocks follow SplitFed (Thapa et al.): stem, layer1..layer4, head; the default cut
puts the stem and the first residual stage on the client.
"""

from __future__ import annotations

from torch import nn


def resnet18_blocks(shape: tuple[int, int, int], n_classes: int) -> list[tuple[str, nn.Module]]:
    # imported here: torchvision.models pulls in torch._dynamo, which doubled every party's start-up
    from torchvision.models import resnet18

    c, h, w = shape
    net = resnet18(weights=None, num_classes=n_classes)
    if min(h, w) < 64:
        # Small images (8x8 digits, 32x32 crops): a 3x3 stride-1 stem and no max-pool,
        # as in the CIFAR variants, so the feature maps do not vanish.
        net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu)
    else:
        net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [
        ("stem", stem),
        ("layer1", net.layer1),
        ("layer2", net.layer2),
        ("layer3", net.layer3),
        ("layer4", net.layer4),
        ("head", nn.Sequential(net.avgpool, nn.Flatten(), net.fc)),
    ]
