"""Optimizers by name, created once per model copy and kept across batches and rounds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from splitfed import lazy_dynamo
from splitfed.config import OPTIMIZERS
from splitfed.errors import ConfigError


def make_optimizer(
    params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """torch's optimizer ``name``, as a subclass that leaves ``torch._dynamo`` unimported until something
    compiles (:mod:`splitfed.lazy_dynamo`: most of a second of every party's start-up)."""
    params = list(params)
    lazy_dynamo.defer()
    if name == "sgd":
        return lazy_dynamo.eager(torch.optim.SGD)(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return lazy_dynamo.eager(torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return lazy_dynamo.eager(torch.optim.AdamW)(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"--optimizer {name!r} is not one of {OPTIMIZERS}")


# ---------------------------------------------------------------- the recipe every optimizer follows


def lr_at(config: Any, round: int) -> float:
    """The learning rate of round ``round`` (1-based) under ``--schedule`` and ``--warmup``.

    The schedule moves by round, so every optimizer of a run (server copies, client halves,
    FedSL segments) follows it alike, however many steps each takes per round. Warmup rises
    linearly over the first ``--warmup`` rounds (``lr * r / warmup``); then ``cosine`` decays
    along half a cosine that would reach 0 one round after the last (the last round still
    learns), ``step`` multiplies by
    0.1 after half and again after three quarters of the rounds, ``none`` stays at ``--lr``.
    """
    base, total, warmup = config.lr, config.epochs, config.warmup
    if warmup and round <= warmup:
        return base * round / warmup
    if config.schedule == "cosine":
        span = max(1, total - warmup)
        done = min(max(round - warmup - 1, 0), span)
        return base * 0.5 * (1 + math.cos(math.pi * done / span))
    if config.schedule == "step":
        return base * (0.1 ** sum(round > total * f for f in (0.5, 0.75)))
    return base


def optimizers_of(role: Any) -> list[torch.optim.Optimizer]:
    """Every optimizer a role holds: its attributes that are optimizers, or dicts/lists of them."""
    found: list[torch.optim.Optimizer] = []
    for value in vars(role).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if isinstance(v, torch.optim.Optimizer)]
    return found


def follow_recipe(role: Any, config: Any) -> None:
    """Once, after the role's setup: clip each optimizer's gradients (``--clip-grad``) before it steps."""
    for opt in optimizers_of(role):
        clip_before_step(opt, config.clip_grad)


def clip_before_step(opt: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Clip the gradient norm of ``opt``'s parameters to ``max_norm`` before each of its steps (None/0: never)."""
    if not max_norm:
        return
    params = [p for group in opt.param_groups for p in group["params"]]

    def clip(_opt: Any, _args: Any, _kwargs: Any) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    opt.register_step_pre_hook(clip)


def start_round(role: Any, config: Any, round: int) -> float:
    """Before each round: every optimizer of the role takes that round's learning rate."""
    lr = lr_at(config, round)
    for opt in optimizers_of(role):
        for group in opt.param_groups:
            group["lr"] = lr
    return lr
