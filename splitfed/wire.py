"""The wire format: a message is one JSON header frame plus one raw frame per tensor.

Two pure functions, :func:`encode` and :func:`decode`, turn a :class:`Message` into a
list of buffers and back. Nothing here is ever unpickled: the header is JSON, tensors
are raw native-order bytes (little-endian on every supported platform) of a whitelisted
dtype, and :func:`decode` validates the frame count, every dtype, every shape and every
length against a size cap *before* allocating anything.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from splitfed import compress
from splitfed.errors import ConfigError, WireError

WIRE_VERSION = 1

#: The runtime's own message kinds, the same in every protocol. A protocol declares its own kinds
#: (``ProtocolSpec.messages``); the wire checks only that a kind is a short identifier, and a link
#: refuses any kind that is neither the runtime's nor its protocol's.
RUNTIME_KINDS = frozenset(
    {
        "hello",  # client -> server: who I am, how long I wait
        "welcome",  # server -> client: the run's configuration
        "ready",  # client -> server: the client's data description, answered with ack when all are set up
        "eval_done",  # client -> server: this round's evaluation is over (with what the protocol reports)
        "idle",  # client -> server: I sit this round out; answered with the round's global weights
        "ack",  # either way: received, nothing to return
        "wait",  # keep-alive: server -> waiting client, or client -> server during local work
        "done",  # server -> client: the run is over, exit
        "error",  # either way: a request was rejected; meta["error"] says why
    }
)

#: What a message kind looks like on the wire: a short lower-case identifier.
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")


def check_kind(kind: Any, kinds: frozenset[str] | None = None) -> str:
    """``kind`` if it is a well-formed kind (and, given ``kinds``, one of them); WireError otherwise."""
    if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
        raise WireError(f"malformed message kind {str(kind)[:40]!r}: a kind is a short lower-case identifier")
    if kinds is not None and kind not in kinds:
        raise WireError(f"unknown message kind {kind!r}; this run uses {sorted(kinds)}")
    return kind


#: Dtypes allowed on the wire, by their wire name.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_TENSORS = 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_NDIM = 8


@dataclass
class Message:
    """One message: a kind, small JSON metadata and named tensors."""

    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sender: str = ""
    round: int = 0
    step: int = 0
    id: int = 0
    #: lossy codecs for some tensors, by tensor name (``{"acts": "int8"}``, see :mod:`splitfed.compress`):
    #: applied by :func:`encode`, undone by :func:`decode`, which records here what arrived compressed
    codec: dict[str, str] = field(default_factory=dict)


def _as_bytes_view(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a CPU tensor (bfloat16 and bool included)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    # view as uint8 reinterprets the storage without a copy, for every dtype.
    flat = t.reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t.reshape(-1).to(torch.uint8)
    return memoryview(flat.numpy())


def _wire_parts(msg: Message, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor, dict[str, Any]]]:
    """What one tensor becomes on the wire: itself, or its codec's parts (the first carries the codec)."""
    codec = compress.parse_codec(msg.codec.get(name, "none"))
    if codec is None:
        return [(name, tensor, {})]
    if not tensor.is_floating_point():
        raise WireError(f"tensor {name!r}: {codec.name} compresses float tensors, not {tensor.dtype}")
    tensor = tensor.detach().cpu()
    if codec.kind == "int8":
        seed = zlib.crc32(f"{msg.sender}|{msg.round}|{msg.step}|{msg.id}|{name}".encode())
        q, scale = compress.quantize_int8(tensor, stochastic=codec.stochastic, seed=seed)
        return [(name, q, {"codec": codec.name}), (name + compress.PART + "scale", scale, {})]
    values, index = compress.topk_pack(tensor, codec.fraction)
    head = {"codec": codec.name, "dense": list(tensor.shape)}
    return [(name, values, head), (name + compress.PART + "index", index, {})]


def encode(msg: Message, *, kinds: frozenset[str] | None = None) -> list[bytes | memoryview]:
    """Turn a message into frames: ``[header_json, tensor_0, tensor_1, ...]``.

    ``kinds``: the kinds this side may send (a link passes its run's); without it, any well-formed kind.
    """
    check_kind(msg.kind, kinds)
    specs = []
    frames: list[bytes | memoryview] = []
    for name, tensor in msg.tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise WireError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if compress.PART in name:
            raise WireError(f"tensor name {name!r}: {compress.PART!r} is reserved for the parts of compressed tensors")
        for part_name, part, extra in _wire_parts(msg, name, tensor):
            dtype = _DTYPE_NAMES.get(part.dtype)
            if dtype is None:
                raise WireError(f"tensor {name!r} has dtype {part.dtype}, not allowed on the wire: {sorted(DTYPES)}")
            specs.append({"name": part_name, "dtype": dtype, "shape": list(part.shape), **extra})
            frames.append(_as_bytes_view(part))
    header = {
        "v": WIRE_VERSION,
        "kind": msg.kind,
        "sender": msg.sender,
        "round": msg.round,
        "step": msg.step,
        "id": msg.id,
        "meta": msg.meta,
        "tensors": specs,
    }
    try:
        head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise WireError(f"message metadata is not plain JSON: {exc}") from exc
    return [head, *frames]


def _frame_len(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


def _check_spec(spec: Any, index: int) -> tuple[str, torch.dtype, tuple[int, ...], int]:
    if not isinstance(spec, dict):
        raise WireError(f"tensor spec {index} is not an object")
    name, dtype_name, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not name:
        raise WireError(f"tensor spec {index} has no valid name")
    if dtype_name not in DTYPES:
        raise WireError(f"tensor {name!r}: dtype {dtype_name!r} is not allowed; allowed: {sorted(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_size(d) for d in shape):
        raise WireError(f"tensor {name!r}: shape {shape!r} is not a list of at most {MAX_NDIM} sizes >= 0")
    dtype = DTYPES[dtype_name]
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return name, dtype, tuple(shape), math.prod(shape) * itemsize


def decode(
    frames: Sequence[Any],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_tensors: int = DEFAULT_MAX_TENSORS,
    kinds: frozenset[str] | None = None,
) -> Message:
    """Validate frames and build a :class:`Message`; raise :class:`WireError` on anything odd.

    Every check happens before any tensor memory is allocated. ``kinds``: the kinds accepted (a link
    passes its run's: the runtime's and its protocol's); without it, any well-formed kind.
    """
    if not frames:
        raise WireError("empty message: expected a JSON header frame")
    if len(frames) - 1 > max_tensors:
        raise WireError(f"message has {len(frames) - 1} tensor frames, more than the cap of {max_tensors}")
    total = sum(_frame_len(f) for f in frames)
    if total > max_bytes:
        raise WireError(f"message of {total} bytes exceeds the cap of {max_bytes} bytes (--max-message-mb)")
    head_bytes = bytes(frames[0])
    if len(head_bytes) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(head_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(head_bytes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    if header.get("v") != WIRE_VERSION:
        raise WireError(f"wire version {header.get('v')!r} is not {WIRE_VERSION}: run the same splitfed on every party")
    kind = check_kind(header.get("kind"), kinds)
    meta, specs = header.get("meta", {}), header.get("tensors", [])
    if not isinstance(meta, dict) or not isinstance(specs, list):
        raise WireError("header fields 'meta' must be an object and 'tensors' a list")
    ints = {k: header.get(k, 0) for k in ("round", "step", "id")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints.values()):
        raise WireError("header fields 'round', 'step' and 'id' must be integers")
    sender = header.get("sender", "")
    if not isinstance(sender, str):
        raise WireError("header field 'sender' must be a string")
    if len(specs) != len(frames) - 1:
        raise WireError(f"header lists {len(specs)} tensors but {len(frames) - 1} tensor frames arrived")
    checked = [_check_spec(spec, i) for i, spec in enumerate(specs)]
    codecs = _check_codecs(specs, max_bytes)
    names = [c[0] for c in checked]
    if len(set(names)) != len(names):
        raise WireError(f"duplicate tensor names in {names}")
    for (name, _, shape, nbytes), frame in zip(checked, frames[1:], strict=True):
        if _frame_len(frame) != nbytes:
            raise WireError(
                f"tensor {name!r} of shape {list(shape)} needs {nbytes} bytes, frame has {_frame_len(frame)}"
            )
    tensors = {}
    for (name, dtype, shape, _), frame in zip(checked, frames[1:], strict=True):
        tensors[name] = _tensor_from_frame(frame, dtype, shape)
    for name, (codec, dense) in codecs.items():
        tensors[name] = _expand(tensors, name, codec, dense)
    extra = [name for name in tensors if compress.PART in name]
    if extra:
        raise WireError(f"tensor {extra[0]!r} is the part of a compressed tensor that is not in the message")
    return Message(
        kind=kind, meta=meta, tensors=tensors, sender=sender, codec={n: c.name for n, (c, _) in codecs.items()}, **ints
    )


def _check_codecs(specs: list[Any], max_bytes: int) -> dict[str, tuple[compress.Codec, tuple[int, ...]]]:
    """The compressed tensors of a message, by name, with their decoded shapes; checked before allocating."""
    found = {}
    for spec in specs:
        if "codec" not in spec:
            continue
        name = spec["name"]
        try:
            codec = compress.parse_codec(spec["codec"]) if isinstance(spec["codec"], str) else None
        except ConfigError:
            codec = None
        if codec is None:
            raise WireError(f"tensor {name!r}: unknown codec {str(spec['codec'])[:40]!r}")
        dense = spec.get("dense", spec["shape"]) if codec.kind == "topk" else spec["shape"]
        if not isinstance(dense, list) or len(dense) > MAX_NDIM or not all(_is_size(d) for d in dense):
            raise WireError(f"tensor {name!r}: decoded shape {dense!r} is not a list of at most {MAX_NDIM} sizes")
        if math.prod(dense) * 4 > max_bytes:
            raise WireError(f"tensor {name!r} would decode to more than the cap of {max_bytes} bytes")
        found[name] = (codec, tuple(dense))
    return found


def _is_size(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d >= 0


def _expand(tensors: dict[str, torch.Tensor], name: str, codec: compress.Codec, dense: tuple[int, ...]) -> torch.Tensor:
    """The float32 tensor a codec's parts stand for (the parts are removed from ``tensors``)."""
    part = name + compress.PART + ("scale" if codec.kind == "int8" else "index")
    if part not in tensors:
        raise WireError(f"compressed tensor {name!r} arrived without its part {part!r}")
    if codec.kind == "int8":
        return compress.dequantize_int8(tensors[name], tensors.pop(part))
    return compress.topk_unpack(tensors[name], tensors.pop(part), dense)


def _tensor_from_frame(frame: Any, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    # One copy into memory we own: the frame may be a zero-copy view into a socket buffer.
    buf = bytearray(frame)
    if not buf:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.frombuffer(buf, dtype=torch.uint8).reshape(shape).to(torch.bool)
    return torch.frombuffer(buf, dtype=dtype).reshape(shape)


def message_nbytes(frames: Sequence[Any]) -> int:
    """Bytes a list of frames puts on the wire (payload, without ZMTP framing)."""
    return sum(_frame_len(f) for f in frames)


def tensor_nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Raw bytes of the tensors alone, the reference for wire overhead."""
    return sum(t.numel() * t.element_size() for t in tensors.values())
