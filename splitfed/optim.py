"""Optimizers by name, created once per model copy and kept across batches and rounds."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from splitfed.config import OPTIMIZERS
from splitfed.errors import ConfigError


def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"--optimizer {name!r} is not one of {OPTIMIZERS}")
