"""Federated averaging as pure functions over state dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from splitfed.errors import ProtocolError

State = Mapping[str, torch.Tensor]


def fedavg(states: Sequence[State], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts (weights are usually sample counts).

    Floating tensors are averaged in float64 and cast back; integer buffers (e.g.
    BatchNorm's ``num_batches_tracked``) take the rounded weighted average.
    """
    if not states:
        raise ProtocolError("fedavg needs at least one state")
    if len(states) != len(weights):
        raise ProtocolError(f"fedavg got {len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ProtocolError(f"fedavg weights must be >= 0 with a positive sum, got {list(weights)}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys:
            raise ProtocolError(f"state {i} has different keys from state 0: {sorted(set(s) ^ set(keys))}")
    out: dict[str, torch.Tensor] = {}
    for k in keys:
        ref = states[0][k]
        for i, s in enumerate(states):
            if s[k].shape != ref.shape:
                raise ProtocolError(f"state {i}: {k} has shape {tuple(s[k].shape)}, expected {tuple(ref.shape)}")
        acc = sum(s[k].detach().to(torch.float64) * (w / total) for s, w in zip(states, weights, strict=True))
        out[k] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return out
