"""The codec: round trips for every wire dtype, and strict rejection of malformed frames."""

from __future__ import annotations

import json

import pytest
import torch

from splitfed.errors import WireError
from splitfed.wire import DTYPES, RUNTIME_KINDS, Message, decode, encode


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_round_trip_every_dtype(dtype: torch.dtype) -> None:
    t = (torch.randn(3, 4, 5) * 10).to(dtype)
    msg = Message(
        "forward",
        meta={"last": True, "note": "é"},
        tensors={"acts": t, "empty": torch.zeros(0, 3, dtype=dtype)},
        sender="client-0",
        round=3,
        step=7,
        id=9,
    )
    back = decode(encode(msg))
    assert (back.kind, back.meta, back.sender, back.round, back.step, back.id) == (
        "forward",
        msg.meta,
        "client-0",
        3,
        7,
        9,
    )
    assert back.tensors["acts"].dtype == dtype and torch.equal(back.tensors["acts"], t)
    assert back.tensors["empty"].shape == (0, 3)


def test_decoded_tensor_owns_its_memory() -> None:
    frames = encode(Message("gradient", tensors={"grad": torch.ones(4)}))
    buf = bytearray(frames[1])
    back = decode([frames[0], buf])
    buf[:] = b"\0" * len(buf)  # the receive buffer is reused: the tensor must not change
    assert torch.equal(back.tensors["grad"], torch.ones(4))
    back.tensors["grad"].add_(1)  # and it is writable


def test_non_contiguous_tensor_is_sent_by_value() -> None:
    t = torch.arange(12.0).reshape(3, 4).t()
    assert torch.equal(decode(encode(Message("weights", tensors={"w": t}))).tensors["w"], t)


def _frames(**changes):
    frames = encode(Message("forward", tensors={"acts": torch.ones(2, 3)}))
    header = json.loads(frames[0])
    header.update(changes)
    return [json.dumps(header).encode(), bytes(frames[1])]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty message"),
        ([b"{not json"], "not valid JSON"),
        ([b"[1, 2]"], "not a JSON object"),
        (_frames(kind="Exec me"), "malformed message kind"),
        (_frames(kind="x" * 33), "malformed message kind"),
        (_frames(kind=7), "malformed message kind"),
        (_frames(v=99), "wire version"),
        (_frames(tensors=[{"name": "acts", "dtype": "object", "shape": [2, 3]}]), "dtype 'object' is not allowed"),
        (_frames(tensors=[{"name": "acts", "dtype": "float32", "shape": [2, -3]}]), "shape"),
        (_frames(tensors=[{"name": "acts", "dtype": "float32", "shape": [2, 4]}]), "needs 32 bytes, frame has 24"),
        (_frames(tensors=[]), "lists 0 tensors but 1 tensor frames"),
        (_frames(round="1"), "must be integers"),
        (_frames(meta=[1]), "'meta' must be an object"),
    ],
)
def test_malformed_frames_are_rejected(frames, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode(frames)


def test_a_kind_outside_the_runs_kinds_is_rejected() -> None:
    kinds = RUNTIME_KINDS | {"forward"}
    assert decode(_frames(kind="forward"), kinds=kinds).kind == "forward"
    with pytest.raises(WireError, match="unknown message kind 'exec'"):
        decode(_frames(kind="exec"), kinds=kinds)
    with pytest.raises(WireError, match="unknown message kind 'pickle'"):
        encode(Message("pickle"), kinds=kinds)


def test_size_cap_is_checked_before_allocating() -> None:
    frames = encode(Message("forward", tensors={"acts": torch.ones(1024)}))
    with pytest.raises(WireError, match="exceeds the cap"):
        decode(frames, max_bytes=1000)
    with pytest.raises(WireError, match="more than the cap"):
        decode([frames[0], *([b""] * 5)], max_tensors=4)


def test_huge_declared_shape_is_rejected_without_allocating() -> None:
    # 2**40 floats would be 4 TiB: the length check must fire before any allocation.
    frames = _frames(tensors=[{"name": "acts", "dtype": "float32", "shape": [2**20, 2**20]}])
    with pytest.raises(WireError, match="needs 4398046511104 bytes"):
        decode(frames)


def test_encode_refuses_what_it_cannot_send() -> None:
    with pytest.raises(WireError, match="malformed message kind"):
        encode(Message("../pickle"))
    with pytest.raises(WireError, match="not allowed on the wire"):
        encode(Message("forward", tensors={"x": torch.ones(2, dtype=torch.complex64)}))
    with pytest.raises(WireError, match="not plain JSON"):
        encode(Message("forward", meta={"f": object()}))
