"""Lossy codecs for smashed data (cut activations and their gradients) on the wire.

``--wire-compress`` names one of them; :mod:`splitfed.wire` applies it to the tensors a message
marks (``Message.codec``) while encoding, and undoes it while decoding, so a protocol sends and
receives ordinary float tensors and only the bytes in between change:

* ``int8``: symmetric 8-bit quantisation with one scale per channel (dimension 1; one scale for a
  tensor of fewer than 2 dimensions). Rounding to nearest: every element comes back within half
  its channel's step (``max|x_c| / 127``). ``int8:stochastic`` rounds up or down at random, with
  the probability that makes the rounding unbiased (within one step).
* ``topk:F``: each example (row of dimension 0) keeps its ``ceil(F * size)`` largest-magnitude
  elements, sent as values and int32 positions; the rest arrive as 0.

These are pure functions of tensors (and a seed, for stochastic rounding); nothing here touches
bytes or sockets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from splitfed.errors import ConfigError, WireError

#: separates a tensor's name from its codec's extra parts on the wire (``acts#scale``)
PART = "#"
QMAX = 127


@dataclass(frozen=True)
class Codec:
    """A parsed ``--wire-compress`` value."""

    kind: str  # "int8" or "topk"
    stochastic: bool = False
    fraction: float = 1.0

    @property
    def name(self) -> str:
        if self.kind == "topk":
            return f"topk:{self.fraction:g}"
        return "int8:stochastic" if self.stochastic else "int8"


def parse_codec(text: str) -> Codec | None:
    """``none`` -> None; ``int8``, ``int8:stochastic``, ``topk:F`` (0 < F <= 1) -> a Codec."""
    text = str(text).strip().lower()
    if text in ("", "none"):
        return None
    if text in ("int8", "int8:stochastic"):
        return Codec("int8", stochastic=text.endswith("stochastic"))
    if text.startswith("topk:"):
        try:
            fraction = float(text[5:])
        except ValueError:
            fraction = float("nan")
        if 0 < fraction <= 1:
            return Codec("topk", fraction=fraction)
    raise ConfigError(
        f"--wire-compress {text!r} is not one of: none, int8, int8:stochastic, topk:F with 0 < F <= 1 (e.g. topk:0.1)"
    )


def channel_scales(x: torch.Tensor) -> torch.Tensor:
    """One float32 scale per channel (dim 1), ``max|x_c| / 127``; 1 for an all-zero channel."""
    x = x.detach().float()
    if x.dim() < 2:
        peak = x.abs().max().reshape(1) if x.numel() else torch.zeros(1)
    else:
        peak = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(dim=1)
    return torch.where(peak > 0, peak / QMAX, torch.ones_like(peak))


def _broadcast(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    return scale.reshape(1, -1, *([1] * (ndim - 2))) if ndim >= 2 else scale


def quantize_int8(x: torch.Tensor, *, stochastic: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, float32 scale per channel). ``seed`` draws the stochastic rounding, so a
    message encodes the same way every time and threads never share a random stream."""
    scale = channel_scales(x)
    scaled = x.detach().float() / _broadcast(scale, x.dim())
    if stochastic:
        gen = torch.Generator().manual_seed(seed)
        scaled = torch.floor(scaled + torch.rand(scaled.shape, generator=gen))
    else:
        scaled = torch.round(scaled)
    return scaled.clamp_(-QMAX, QMAX).to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if q.dtype != torch.int8 or scale.dtype != torch.float32:
        raise WireError(f"int8 codec: values must be int8 and scales float32, got {q.dtype} and {scale.dtype}")
    channels = q.shape[1] if q.dim() >= 2 else 1
    if scale.shape != (channels,):
        raise WireError(f"int8 codec: {channels} channels need {channels} scales, got shape {list(scale.shape)}")
    if not bool(torch.isfinite(scale).all()):
        raise WireError("int8 codec: a scale is not finite")
    return q.float() * _broadcast(scale, q.dim())


def topk_count(row_size: int, fraction: float) -> int:
    """Elements kept per example: at least one, at most all."""
    return max(1, min(row_size, math.ceil(fraction * row_size))) if row_size else 0


def topk_pack(x: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, int32 positions), both (rows, k): each row's largest-magnitude elements."""
    rows = x.detach().reshape(x.shape[0], -1) if x.dim() else x.detach().reshape(1, 1)
    k = topk_count(rows.shape[1], fraction)
    index = rows.abs().topk(k, dim=1, sorted=False).indices
    return rows.gather(1, index), index.to(torch.int32)


def topk_unpack(values: torch.Tensor, index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense float32 tensor of ``shape`` with zeros where nothing was sent; checks every position."""
    rows = shape[0] if shape else 1
    row_size = math.prod(shape[1:]) if shape else 1
    if values.dim() != 2 or values.shape != index.shape or values.shape[0] != rows or values.shape[1] > row_size:
        raise WireError(
            f"topk codec: values {list(values.shape)} and positions {list(index.shape)} do not fit shape {list(shape)}"
        )
    if index.dtype != torch.int32:
        raise WireError(f"topk codec: positions must be int32, got {index.dtype}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= row_size):
        raise WireError(f"topk codec: a position is outside 0..{row_size - 1}")
    dense = torch.zeros(rows, row_size, dtype=torch.float32)
    dense.scatter_(1, index.long(), values.float())
    return dense.reshape(shape)
