"""Seeded weight initialisation that no other thread can disturb.

``torch.manual_seed`` seeds one process-global generator. Parties that run as threads of
one process (``splitfed.run(in_process=True)``, the equivalence tests) would interleave their
draws from it, so every party would get different initial weights from the same seed.
Here a model is first built on the ``meta`` device (no memory, no random draw), then
materialised on the CPU and initialised from a private ``torch.Generator``, with the
same distributions as PyTorch's own ``reset_parameters``. The global RNG is neither read
nor changed, and the result depends on the seed alone, whatever runs beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M")

_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)


def seeded(build: Callable[[], M], seed: int, *, conv_init: str = "torch") -> M:
    """Call ``build`` (which returns modules) and initialise what it built from ``seed`` only.

    ``conv_init="kaiming_fan_out"`` follows torchvision's ResNet (He normal, fan-out).
    """
    with torch.device("meta"):
        built = build()
    gen = torch.Generator().manual_seed(int(seed))
    for module in _modules_of(built):
        module.to_empty(device="cpu")
        init_module(module, gen, conv_init=conv_init)
    return built


def _modules_of(built: object) -> list[nn.Module]:
    if isinstance(built, nn.Module):
        return [built]
    if isinstance(built, (list, tuple)):
        return [m for item in built for m in _modules_of(item)]
    raise TypeError(f"a seeded builder returned {type(built).__name__}, not modules")


@torch.no_grad()
def init_module(module: nn.Module, gen: torch.Generator, *, conv_init: str = "torch") -> None:
    """Initialise every parameter and buffer of ``module`` from ``gen``, layer by layer."""
    for sub in module.modules():
        own = list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False))
        if not own:
            continue
        if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
            _init_linear_or_conv(sub, gen, conv_init)
        elif isinstance(sub, nn.RNNBase):
            bound = 1.0 / math.sqrt(sub.hidden_size)
            for p in sub.parameters(recurse=False):
                nn.init.uniform_(p, -bound, bound, generator=gen)
        elif isinstance(sub, _NORMS):
            sub.reset_parameters()  # ones and zeros (and fresh running statistics): no randomness
        else:
            raise TypeError(f"no seeded initialisation for {type(sub).__name__}; add it to splitfed.models.init")


def _init_linear_or_conv(layer: nn.Module, gen: torch.Generator, conv_init: str) -> None:
    weight = layer.weight
    fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
    if conv_init == "kaiming_fan_out" and isinstance(layer, nn.modules.conv._ConvNd):
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=gen)
    else:  # PyTorch's default: He uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=gen)
