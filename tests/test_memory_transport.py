"""The in-process memory:// transport: the same contract as the ZeroMQ one, chosen by the address."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import torch

from splitfed.errors import ConfigError, PeerLostError, RemoteError, TransportError
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.transport.memory import HWM, MemoryClientTransport, MemoryServerTransport
from splitfed.transport.schemes import client_transport, known_schemes, server_transport
from splitfed.transport.zeromq import ZmqServerTransport
from splitfed.wire import Message, decode, encode

MB = 1 << 20


def fresh() -> str:
    """A name no other test uses: the registry is shared by every thread of the process."""
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture
def server():
    transport = server_transport(fresh(), max_bytes=MB, send_timeout=0.5)
    yield transport
    transport.close()


def client(address: str, name: str = "c", **kw) -> MemoryClientTransport:
    kw.setdefault("connect_timeout", 0.3)
    return client_transport(address, name, max_bytes=kw.pop("max_bytes", MB), **kw)


def test_the_scheme_picks_the_class(server) -> None:
    assert isinstance(server, MemoryServerTransport)
    tcp = server_transport("tcp://127.0.0.1:*", max_bytes=MB)
    try:
        assert isinstance(tcp, ZmqServerTransport)
    finally:
        tcp.close()
    assert {"tcp://", "ipc://", "inproc://", "memory://"} <= set(known_schemes())


@pytest.mark.parametrize("address", ["http://x:1", "127.0.0.1:5555", "memory://"])
def test_an_unknown_scheme_says_which_are_known(address: str) -> None:
    with pytest.raises(ConfigError) as err:
        server_transport(address, max_bytes=MB)
    if address != "memory://":
        assert all(s in str(err.value) for s in ("tcp://", "ipc://", "inproc://", "memory://"))
        with pytest.raises(ConfigError):
            client_transport(address, "c", max_bytes=MB)


def test_a_round_trip_through_the_links_copies_every_tensor(server) -> None:
    a = client(server.address)
    acts = torch.arange(6.0).reshape(2, 3)
    a.send(encode(Message("forward", tensors={"acts": acts}, id=1)))
    acts.add_(100)  # the sender's buffer changes after send: the receiver must not see it
    peer, frames = server.recv(1.0)
    assert peer == "c" and all(isinstance(f, memoryview) and f.readonly for f in frames)
    got = decode(frames)
    assert got.kind == "forward" and torch.equal(got.tensors["acts"], torch.arange(6.0).reshape(2, 3))
    assert server.send("c", encode(Message("gradient", tensors={"grad": -acts}, id=1)))
    back = decode(a.recv(1.0))
    assert torch.equal(back.tensors["grad"], -acts)
    a.close()


def test_recv_returns_none_after_the_timeout(server) -> None:
    a = client(server.address)
    for recv in (lambda: server.recv(0.2), lambda: a.recv(0.2)):
        t0 = time.monotonic()
        assert recv() is None
        assert 0.15 <= time.monotonic() - t0 < 2.0
    a.close()


def test_a_frame_over_the_receivers_limit_is_dropped_unseen(server) -> None:
    a = client(server.address, max_bytes=1000)
    assert a.send([b"h", bytes(MB + 1)])  # "sent", as ZeroMQ says, and dropped at the server
    assert server.recv(0.2) is None
    assert server.send("c", [b"h", bytes(1001)])
    assert a.recv(0.2) is None
    a.send([b"h", bytes(MB)])
    assert server.recv(1.0) is not None  # at the limit it passes


def test_frames_past_the_cap_are_cut_so_the_decoder_refuses(server) -> None:
    from splitfed.transport.base import MAX_FRAMES

    a = client(server.address)
    a.send([b"h"] + [b""] * (MAX_FRAMES + 50))
    _, frames = server.recv(1.0)
    assert len(frames) == MAX_FRAMES + 1


def test_two_servers_cannot_bind_one_name(server) -> None:
    with pytest.raises(TransportError, match="another server"):
        server_transport(server.address, max_bytes=MB)
    server.close()
    again = server_transport(server.address, max_bytes=MB)  # closing frees the name
    again.close()


def test_a_client_may_come_before_its_server() -> None:
    address = fresh()
    a = client(address, connect_timeout=5.0)
    holder: list[MemoryServerTransport] = []
    binder = threading.Timer(0.2, lambda: holder.append(server_transport(address, max_bytes=MB)))
    binder.start()
    try:
        assert a.send([b"early"])  # waits for the bind
        binder.join()
        assert holder[0].recv(1.0)[1][0] == b"early"
    finally:
        binder.join()
        a.close()
        for s in holder:
            s.close()


def test_no_server_means_a_lost_server() -> None:
    a = client(fresh(), connect_timeout=0.2)
    assert a.send([b"x"], block=False) is False
    with pytest.raises(PeerLostError, match="not reachable"):
        a.send([b"x"])
    a.close()


def test_sends_to_a_closed_or_unknown_client_fail(server) -> None:
    a = client(server.address)
    a.send([b"last words"])
    a.close()
    assert server.recv(1.0)[1][0] == b"last words"  # delivered before the close: still read
    assert server.send("c", [b"x"], block=False) is False
    with pytest.raises(PeerLostError, match="not connected"):
        server.send("c", [b"x"])
    with pytest.raises(PeerLostError):
        server.send("nobody", [b"x"])
    with pytest.raises(TransportError):
        a.send([b"x"])


def test_a_closed_server_is_lost_to_its_clients(server) -> None:
    a = client(server.address, connect_timeout=0.2)
    a.send([b"x"])
    server.send("c", [b"bye"])
    server.close()
    assert a.recv(0.5)[0] == b"bye"  # delivered before the close: still read
    assert a.send([b"x"], block=False) is False
    with pytest.raises(PeerLostError):
        a.send([b"x"])
    with pytest.raises(TransportError):
        server.recv(0.1)
    a.close()


def test_a_taken_name_is_not_admitted(server) -> None:
    a, twin = client(server.address), client(server.address, connect_timeout=0.2)
    assert a.send([b"first"])
    assert twin.send([b"second"])  # answered at once with the refusal, not delivered
    assert "is already connected" in decode(twin.recv(1.0)).meta["error"]
    a.close()
    assert twin.send([b"second"])  # the name is free again
    assert [server.recv(1.0)[1][0] for _ in range(2)] == [b"first", b"second"]
    twin.close()


def test_a_client_that_never_reads_holds_a_blocking_send_only_until_send_timeout(server) -> None:
    a = client(server.address)
    a.send([b"join"])
    for _ in range(HWM):
        assert server.send("c", [b"x"])
    assert server.send("c", [b"x"], block=False) is False
    with pytest.raises(PeerLostError, match="took no message"):
        server.send("c", [b"x"])
    a.close()


def test_curve_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="no encryption"):
        server_transport(fresh(), max_bytes=MB, curve=object())


def test_the_links_reject_strangers_and_name_a_silent_member(server) -> None:
    link = ServerLink(server, timeout=0.6, max_bytes=MB)
    member = ClientLink(client(server.address, "member"), timeout=5.0, max_bytes=MB)
    stranger = ClientLink(client(server.address, "stranger"), timeout=5.0, max_bytes=MB)
    member.send(Message("hello"))
    peer, _ = link.recv(expect=("hello",))
    link.register(peer)
    link.accepting = False
    link.reply(peer, Message("welcome"))
    assert member.receive(expect=("welcome",)).kind == "welcome"
    stranger.send(Message("forward", tensors={"acts": torch.ones(3)}))
    with pytest.raises(PeerLostError, match="member"):  # the stranger is refused; the member stays silent
        link.recv()
    assert link.stats.rejected == 1
    with pytest.raises(RemoteError, match="unknown client"):
        stranger.receive()
    member.close()
    stranger.close()


def test_memory_and_inproc_carry_the_same_run(tmp_path) -> None:
    """The double moves what ZeroMQ moves: same figures, same bytes, message for message."""
    import json

    from splitfed.config import RunConfig
    from splitfed.testing import run_in_threads

    config = RunConfig(protocol="sflv1", clients=2, epochs=1, seed=3, timeout=30)
    runs = {t: json.loads(run_in_threads(config, tmp_path / t, transport=t).read_text()) for t in ("memory", "inproc")}
    for key in ("test_loss", "train_loss", "bytes_sent", "bytes_received", "bytes_by_client"):
        assert runs["memory"][key] == runs["inproc"][key], key
    with pytest.raises(ConfigError, match="memory"):
        run_in_threads(config, tmp_path / "tcp", transport="tcp")


@pytest.mark.parametrize("scheme", ["memory", "ipc"])
def test_an_interrupt_from_another_thread_ends_a_wait_at_once(scheme: str, tmp_path) -> None:
    """What lets the server reply as soon as a worker's step is done: ``interrupt`` (from any thread) makes
    the serving thread's ``recv`` return None at once, and one sent before the wait ends the next wait."""
    address = fresh() if scheme == "memory" else f"ipc://{tmp_path}/s"
    transport = server_transport(address, max_bytes=MB, send_timeout=0.5)
    try:
        transport.interrupt()  # before the wait: it is not lost
        started = time.monotonic()
        assert transport.recv(30.0) is None
        assert time.monotonic() - started < 10
        timer = threading.Timer(0.2, transport.interrupt)
        timer.start()
        started = time.monotonic()
        assert transport.recv(30.0) is None
        assert time.monotonic() - started < 10
        timer.join()
        started = time.monotonic()
        assert transport.recv(0.2) is None  # spent: the next wait runs its course
        assert time.monotonic() - started >= 0.15
        for _ in range(3):  # many interrupts wake one wait, and none is left over after it
            transport.interrupt()
        assert transport.recv(30.0) is None
        started = time.monotonic()
        assert transport.recv(0.3) is None
        assert time.monotonic() - started >= 0.25
    finally:
        transport.close()
    transport.interrupt()  # after close: harmless (a worker may finish late)
