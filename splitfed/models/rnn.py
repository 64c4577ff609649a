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


class SegmentRNN(nn.Module):
    """One recurrent layer over one segment: (batch, time, features), state in -> state out."""

    def __init__(self, cell: str, input_size: int, hidden: int) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"--cell {cell!r} is not one of {sorted(CELLS)}")
        self.cell, self.hidden = cell, hidden
        self.rnn = CELLS[cell](input_size, hidden, batch_first=True)

    def zero_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        h = torch.zeros(1, batch, self.hidden, device=device)
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else (h,)

    def forward(self, x: torch.Tensor, state: State) -> State:
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


def segment_bounds(length: int, segments: int) -> list[tuple[int, int]]:
    """Consecutive, near-equal [start, stop) time ranges, one per segment."""
    if not 1 <= segments <= length:
        raise ConfigError(f"--segments {segments} must be between 1 and the sequence length {length}")
    cuts = [round(i * length / segments) for i in range(segments + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def build_segments(
    cell: str, input_size: int, hidden: int, n_classes: int, segments: int, seed: int
) -> tuple[list[SegmentRNN], nn.Linear]:
    """All sub-networks and the classifier, initialised from ``seed`` (the same on every party)."""
    if cell not in CELLS:
        raise ConfigError(f"--cell {cell!r} is not one of {sorted(CELLS)}")
    return seeded(
        lambda: ([SegmentRNN(cell, input_size, hidden) for _ in range(segments)], nn.Linear(hidden, n_classes)), seed
    )
