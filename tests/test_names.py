"""A second process that claims the name of a connected member is told so, over ZeroMQ and in memory."""

from __future__ import annotations

import time
import uuid

import pytest

from splitfed.transport.base import ClientTransport, ServerTransport
from splitfed.transport.memory import MemoryClientTransport, MemoryServerTransport
from splitfed.transport.zeromq import ZmqClientTransport, ZmqServerTransport
from splitfed.wire import Message, decode, encode

MB = 1 << 20


def _pair(kind: str) -> tuple[ServerTransport, type]:
    if kind == "tcp":
        return ZmqServerTransport("tcp://127.0.0.1:*", max_bytes=MB), ZmqClientTransport
    return MemoryServerTransport(f"memory://names-{uuid.uuid4().hex}", max_bytes=MB), MemoryClientTransport


def _next(server: ServerTransport, seconds: float = 10.0) -> tuple[str, list] | None:
    """The next message the server transport hands over within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = server.recv(0.1)
        if got is not None:
            return got
    return None


def _answer(client: ClientTransport, server: ServerTransport, seconds: float = 10.0) -> Message | None:
    """What ``client`` is sent while the server keeps reading."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frames = client.recv(0.1)
        if frames is not None:
            return decode(frames)
        assert server.recv(0.05) is None  # the twin's message never reaches the server's caller
    return None


@pytest.mark.parametrize("kind", ["tcp", "memory"])
def test_a_second_client_with_a_connected_name_is_refused_and_the_name_is_free_once_it_goes(kind: str) -> None:
    server, client_cls = _pair(kind)
    member = client_cls(server.address, "client-0", max_bytes=MB, connect_timeout=10)
    twin = client_cls(server.address, "client-0", max_bytes=MB, connect_timeout=10)
    try:
        assert member.send(encode(Message("hello", sender="client-0")))
        peer, frames = _next(server)
        assert peer == "client-0" and decode(frames).kind == "hello"
        assert twin.send(encode(Message("hello", sender="client-0")))
        refusal = _answer(twin, server)
        assert refusal is not None and refusal.kind == "error"
        assert "name 'client-0' is already connected" in refusal.meta["error"]
        assert "choose another --name" in refusal.meta["error"]
        assert server.send("client-0", encode(Message("wait")))  # the member is untouched
        assert decode(_wait_for(member)).kind == "wait"
        member.close()
        deadline = time.monotonic() + 20
        got = None
        while got is None and time.monotonic() < deadline:  # the member's connection goes; then the name is free
            twin.send(encode(Message("hello", sender="client-0", id=2)))
            got = _next(server, 1.0)
        assert got is not None and got[0] == "client-0" and decode(got[1]).id == 2
        assert server.send("client-0", encode(Message("welcome")))  # and answers reach the new holder
        kinds = [decode(_wait_for(twin)).kind]
        while kinds[-1] == "error":  # refusals of its tries while the member's connection was still up
            kinds.append(decode(_wait_for(twin)).kind)
        assert kinds[-1] == "welcome"
    finally:
        twin.close()
        member.close()
        server.close()


def _wait_for(client: ClientTransport, seconds: float = 10.0) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frames = client.recv(0.1)
        if frames is not None:
            return frames
    raise AssertionError("nothing arrived")
