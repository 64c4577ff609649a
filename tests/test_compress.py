"""The lossy codecs of --wire-compress: error bounds, and what the wire really carries."""

from __future__ import annotations

import json

import pytest
import torch

from splitfed.compress import channel_scales, dequantize_int8, parse_codec, quantize_int8, topk_pack, topk_unpack
from splitfed.errors import ConfigError, WireError
from splitfed.wire import Message, decode, encode, message_nbytes


def activations(seed: int = 0) -> torch.Tensor:
    """Cut-layer-like activations: channels of very different ranges, one all zero."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 8, 6, 5, generator=gen) * torch.logspace(-3, 2, 8).reshape(1, 8, 1, 1)
    x[:, 3] = 0
    return x


def test_int8_round_trip_is_within_half_a_step_per_channel() -> None:
    x = activations()
    q, scale = quantize_int8(x)
    back = dequantize_int8(q, scale)
    assert q.dtype == torch.int8 and scale.shape == (8,)
    step = scale.reshape(1, 8, 1, 1)
    assert bool(((back - x).abs() <= step / 2 + 1e-6 * step).all())
    assert torch.equal(back[:, 3], torch.zeros_like(back[:, 3]))  # an all-zero channel stays exact
    # per channel, not per tensor: the smallest channel keeps its precision
    assert float((back[:, 0] - x[:, 0]).abs().max()) < 1e-4


def test_int8_stochastic_rounding_is_within_a_step_and_unbiased() -> None:
    x = activations(1)
    step = channel_scales(x).reshape(1, 8, 1, 1)
    draws = [dequantize_int8(*quantize_int8(x, stochastic=True, seed=s)) for s in range(200)]
    for back in draws[:5]:
        assert bool(((back - x).abs() < step * (1 + 1e-6)).all())
    mean_error = (torch.stack(draws).mean(0) - x) / step
    assert float(mean_error.abs().mean()) < 0.02  # nearest rounding would average ~0.25 of a step
    assert not torch.equal(draws[0], draws[1])
    assert torch.equal(draws[0], dequantize_int8(*quantize_int8(x, stochastic=True, seed=0)))  # seeded


def test_topk_keeps_each_rows_largest_elements() -> None:
    x = activations(2)
    values, index = topk_pack(x, 0.1)
    assert values.shape == (16, 24) and index.dtype == torch.int32  # ceil(0.1 * 240) per example
    back = topk_unpack(values, index, tuple(x.shape))
    rows, kept = x.reshape(16, -1), back.reshape(16, -1)
    for r in range(16):
        nonzero = kept[r] != 0
        assert torch.equal(kept[r][nonzero], rows[r][nonzero])
        assert float(rows[r][~nonzero].abs().max()) <= float(rows[r][nonzero].abs().min())


@pytest.mark.parametrize(
    ("codec", "ratio_max", "error_max"),
    [("int8", 0.26, 0.5), ("int8:stochastic", 0.26, 1.0), ("topk:0.1", 0.21, None)],
)
def test_the_wire_carries_the_compressed_bytes(codec: str, ratio_max: float, error_max: float | None) -> None:
    x = activations(3)
    plain = encode(Message("forward", tensors={"acts": x, "labels": torch.arange(16)}))
    small = encode(Message("forward", tensors={"acts": x, "labels": torch.arange(16)}, codec={"acts": codec}))
    labels_bytes = 16 * 8
    ratio = (message_nbytes(small[1:]) - labels_bytes) / (message_nbytes(plain[1:]) - labels_bytes)
    assert ratio <= ratio_max
    got = decode(small)
    assert got.codec == {"acts": codec} and got.tensors.keys() == {"acts", "labels"}
    assert got.tensors["acts"].dtype == torch.float32 and got.tensors["acts"].shape == x.shape
    assert torch.equal(got.tensors["labels"], torch.arange(16))
    if error_max is not None:
        step = channel_scales(x).reshape(1, 8, 1, 1)
        assert bool(((got.tensors["acts"] - x).abs() <= error_max * step * (1 + 1e-6)).all())


def test_a_stochastic_message_encodes_the_same_way_twice() -> None:
    msg = Message("forward", tensors={"acts": activations(4)}, codec={"acts": "int8:stochastic"}, step=3)
    assert [bytes(f) for f in encode(msg)] == [bytes(f) for f in encode(msg)]


def test_bad_compressed_messages_are_refused() -> None:
    x = activations(5)
    frames = encode(Message("forward", tensors={"acts": x}, codec={"acts": "topk:0.5"}))
    bad_index = torch.full((16, 120), 10_000, dtype=torch.int32)
    with pytest.raises(WireError, match="outside"):
        decode([frames[0], frames[1], memoryview(bad_index.numpy()).cast("B")])
    int8 = encode(Message("forward", tensors={"acts": x}, codec={"acts": "int8"}))
    header = json.loads(bytes(int8[0]))
    header["tensors"] = header["tensors"][:1]
    with pytest.raises(WireError, match="without its part"):
        decode([json.dumps(header).encode(), int8[1]])
    header = json.loads(bytes(int8[0]))
    del header["tensors"][0]["codec"]  # a part with no compressed tensor to belong to
    with pytest.raises(WireError, match="part of a compressed tensor"):
        decode([json.dumps(header).encode(), *int8[1:]])
    head = bytes(frames[0]).replace(b'"topk:0.5"', b'"zip"')
    with pytest.raises(WireError, match="unknown codec"):
        decode([head, *frames[1:]])
    bomb = bytes(frames[0]).replace(b'"dense":[16,8,6,5]', b'"dense":[16,8,6,500000000]')
    with pytest.raises(WireError, match="decode to more than"):
        decode([bomb, *frames[1:]])
    with pytest.raises(WireError, match="reserved"):
        encode(Message("forward", tensors={"acts#scale": x}))
    with pytest.raises(WireError, match="compresses float"):
        encode(Message("forward", tensors={"labels": torch.arange(3)}, codec={"labels": "int8"}))


@pytest.mark.parametrize("text", ["int4", "topk:0", "topk:1.5", "topk:x"])
def test_bad_codec_names_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ConfigError, match="none, int8, int8:stochastic, topk:F"):
        parse_codec(text)
