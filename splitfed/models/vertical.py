"""Models for vertically partitioned data: one head per feature band, one top on the server."""

from __future__ import annotations

from torch import nn

from splitfed.errors import ConfigError
from splitfed.models.init import seeded

EMBED = 64


def band_bounds(width: int, bands: int) -> list[tuple[int, int]]:
    """Column ranges of K vertical bands of an image (for 2 clients: left half, right half).

    Every band needs at least one column, so there can be at most as many clients as the
    image is wide; more is a ConfigError that says so.
    """
    cuts = [round(i * width / bands) for i in range(bands + 1)] if bands > 0 else []
    if bands < 1 or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise ConfigError(
            f"an image {width} pixels wide cannot be cut into {bands} vertical band(s), one per client and each "
            f"at least one column wide; use fewer clients (at most {width}) or wider images"
        )
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
    return seeded(lambda: band_head(channels, height, width), seed * 1009 + position)


def seeded_top(bands: int, n_classes: int, seed: int) -> nn.Sequential:
    return seeded(lambda: top_model(bands, n_classes), seed * 1009 + 1000)
