"""Models for vertically partitioned data: one head per feature band, one top on the server."""

from __future__ import annotations

import torch
from torch import nn

EMBED = 64


def band_bounds(width: int, bands: int) -> list[tuple[int, int]]:
    """Column ranges of K vertical bands of an image (for 2 clients: left half, right half)."""
    cuts = [round(i * width / bands) for i in range(bands + 1)]
    if any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise ValueError(f"an image {width} pixels wide cannot be cut into {bands} bands")
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def band_head(channels: int, height: int, width: int) -> nn.Sequential:
    """A data owner's model: a small CNN over its band, ending in an EMBED-wide vector."""
    oh, ow = min(4, height), min(4, width)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d((oh, ow)),
        nn.Flatten(),
        nn.Linear(32 * oh * ow, EMBED),
        nn.ReLU(),
    )


def top_model(bands: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(bands * EMBED, 128), nn.ReLU(), nn.Linear(128, n_classes))


def seeded_head(channels: int, height: int, width: int, seed: int, position: int) -> nn.Sequential:
    """Owner ``position``'s head, initialised from (seed, position) so each owner can build its own."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + position)
        return band_head(channels, height, width)


def seeded_top(bands: int, n_classes: int, seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1009 + 1000)
        return top_model(bands, n_classes)
