"""Models as ordered blocks, and the cut that splits them into a client and a server half."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from splitfed.errors import ConfigError
from splitfed.models.cnn import compact_cnn
from splitfed.models.init import seeded
from splitfed.models.resnet import resnet18_blocks

Builder = Callable[[tuple[int, int, int], int], list[tuple[str, nn.Module]]]

#: name -> (builder, default cut: the number of blocks on the client side)
MODELS: dict[str, tuple[Builder, int]] = {
    "cnn": (compact_cnn, 1),
    "resnet18": (resnet18_blocks, 2),
}


def build_model(name: str, shape: tuple[int, int, int], n_classes: int, seed: int) -> nn.Sequential:
    """The whole (unsplit) model, initialised from ``seed`` alone (see :mod:`splitfed.models.init`)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r} is not one of {sorted(MODELS)}")
    builder = MODELS[name][0]
    conv_init = "kaiming_fan_out" if name.startswith("resnet") else "torch"
    return seeded(lambda: nn.Sequential(OrderedDict(builder(shape, n_classes))), seed, conv_init=conv_init)


def resolve_cut(name: str, cut: int | None, model: nn.Sequential) -> int:
    cut = MODELS[name][1] if cut is None else cut
    if not 1 <= cut < len(model):
        names = list(model._modules)
        raise ConfigError(
            f"--cut {cut} is out of range for {name}: use 1..{len(model) - 1} "
            f"(the number of blocks the client keeps, out of {names})"
        )
    return cut


def check_cut(name: str, cut: int | None, shape: tuple[int, int, int], n_classes: int) -> int:
    """The cut a run will use, checked before any process starts (the model is built on ``meta``:
    no memory, no weights)."""
    if name not in MODELS:
        raise ConfigError(f"--model {name!r} is not one of {sorted(MODELS)}")
    with torch.device("meta"):
        model = nn.Sequential(OrderedDict(MODELS[name][0](shape, n_classes)))
    return resolve_cut(name, cut, model)


def split_model(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Client half = the first ``cut`` blocks; server half = the rest. They share the weights."""
    blocks = list(model._modules.items())
    return nn.Sequential(OrderedDict(blocks[:cut])), nn.Sequential(OrderedDict(blocks[cut:]))


__all__ = ["MODELS", "build_model", "resolve_cut", "split_model"]
