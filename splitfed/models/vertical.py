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


HEADS = ("basic", "cnn")


def band_head(channels: int, height: int, width: int, kind: str = "basic") -> nn.Sequential:
    """A data owner's model over its band, ending in an EMBED-wide vector.

    ``basic``: two 3x3 convolutions at full resolution, averaged down to 4x4. ``cnn``: three
    conv blocks with GroupNorm, the first two halving the resolution (as the compact CNN
    does), then the embedding.
    """
    if kind == "cnn":
        return _cnn_head(channels, height, width)
    if kind != "basic":
        raise ConfigError(f"--head {kind!r} is not one of {', '.join(HEADS)}")
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


def _cnn_head(channels: int, height: int, width: int) -> nn.Sequential:
    def block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(), *([nn.MaxPool2d(2)] * pool)]

    pool1, pool2 = min(height, width) >= 2, min(height, width) >= 4
    oh, ow = min(4, height // (1 + pool1) // (1 + pool2)), min(4, width // (1 + pool1) // (1 + pool2))
    return nn.Sequential(
        *block(channels, 32, pool1),
        *block(32, 64, pool2),
        *block(64, 64, False),
        nn.AdaptiveAvgPool2d((max(1, oh), max(1, ow))),
        nn.Flatten(),
        nn.Linear(64 * max(1, oh) * max(1, ow), EMBED),
        nn.ReLU(),
    )


def top_model(bands: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(bands * EMBED, 128), nn.ReLU(), nn.Linear(128, n_classes))


def seeded_head(channels: int, height: int, width: int, seed: int, position: int, kind: str = "basic") -> nn.Sequential:
    """Owner ``position``'s head, initialised from (seed, position) so each owner can build its own."""
    return seeded(lambda: band_head(channels, height, width, kind), seed * 1009 + position)


def seeded_top(bands: int, n_classes: int, seed: int) -> nn.Sequential:
    return seeded(lambda: top_model(bands, n_classes), seed * 1009 + 1000)
