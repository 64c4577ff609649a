"""Recurrent sub-networks for sequences split along time (FedSL).

Each segment of a sequence gets its own sub-network with its own weights. It starts
from the hidden state handed over by the previous segment and hands its final state on.
"""

from __future__ import annotations

import torch
from torch import nn

from splitfed.errors import ConfigError
from splitfed.models.init import seeded

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

State = tuple[torch.Tensor, ...]  # (h,) for RNN and GRU, (h, c) for LSTM


ENCODERS = ("none", "conv")
ENCODED = 256  # features per time step out of the conv encoder


def step_encoder(channels: int, input_size: int) -> nn.Sequential:
    """A 1-D CNN applied to every time step (an image row: ``channels`` x width pixels) alike.

    It gives the recurrent layer features that do not move when the picture shifts along
    the step: two convolutions with pooling, then the strongest response in each of 8 places.
    """
    if input_size % channels:
        raise ConfigError(f"--encoder conv: {input_size} features per step are not {channels} channels of pixels")
    return nn.Sequential(
        nn.Unflatten(-1, (channels, input_size // channels)),
        nn.Conv1d(channels, 16, 5, padding=2),
        nn.GroupNorm(4, 16),
        nn.ReLU(),
        nn.MaxPool1d(2, ceil_mode=True),
        nn.Conv1d(16, 32, 5, padding=2),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.AdaptiveMaxPool1d(8),
        nn.Flatten(),
    )


class SegmentRNN(nn.Module):
    """One recurrent layer over one segment: (batch, time, features), state in -> state out.

    With ``encoder="conv"`` each time step first goes through :func:`step_encoder`.
    """

    def __init__(self, cell: str, input_size: int, hidden: int, encoder: str = "none", channels: int = 1) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"--cell {cell!r} is not one of {sorted(CELLS)}")
        if encoder not in ENCODERS:
            raise ConfigError(f"--encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
        self.cell, self.hidden = cell, hidden
        self.encoder = step_encoder(channels, input_size) if encoder == "conv" else None
        self.rnn = CELLS[cell](ENCODED if self.encoder is not None else input_size, hidden, batch_first=True)

    def zero_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        h = torch.zeros(1, batch, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else (h,)

    def forward(self, x: torch.Tensor, state: State) -> State:
        if self.encoder is not None:
            n, t, f = x.shape
            x = self.encoder(x.reshape(n * t, f)).reshape(n, t, ENCODED)
        _, out = self.rnn(x, state if self.cell == "lstm" else state[0])
        return tuple(out) if self.cell == "lstm" else (out,)


def to_sequence(images: torch.Tensor, order: str) -> torch.Tensor:
    """(N, C, H, W) images -> (N, time, features): rows (time = H) or cols (time = W)."""
    n, c, h, w = images.shape
    if order == "rows":
        return images.permute(0, 2, 1, 3).reshape(n, h, c * w)
    if order == "cols":
        return images.permute(0, 3, 1, 2).reshape(n, w, c * h)
    raise ConfigError(f"--sequence {order!r} is not one of rows, cols")


def from_sequence(seq: torch.Tensor, order: str, channels: int) -> torch.Tensor:
    """The inverse of :func:`to_sequence`: (N, time, features) -> (N, C, H, W) (a band, for a segment)."""
    n, t, f = seq.shape
    steps = seq.reshape(n, t, channels, f // channels)
    return steps.permute(0, 2, 1, 3) if order == "rows" else steps.permute(0, 2, 3, 1)


def segment_bounds(length: int, segments: int) -> list[tuple[int, int]]:
    """Consecutive, near-equal [start, stop) time ranges, one per segment."""
    if not 1 <= segments <= length:
        raise ConfigError(f"--segments {segments} must be between 1 and the sequence length {length}")
    cuts = [round(i * length / segments) for i in range(segments + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def build_segments(
    cell: str,
    input_size: int,
    hidden: int,
    n_classes: int,
    segments: int,
    seed: int,
    encoder: str = "none",
    channels: int = 1,
) -> tuple[list[SegmentRNN], nn.Linear]:
    """All sub-networks and the classifier, initialised from ``seed`` (the same on every party)."""
    if cell not in CELLS:
        raise ConfigError(f"--cell {cell!r} is not one of {sorted(CELLS)}")
    return seeded(
        lambda: (
            [SegmentRNN(cell, input_size, hidden, encoder, channels) for _ in range(segments)],
            nn.Linear(hidden, n_classes),
        ),
        seed,
    )
