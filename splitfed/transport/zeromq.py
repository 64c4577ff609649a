"""ZeroMQ transport: a ROUTER on the server, one DEALER per client.

ROUTER/DEALER rather than REQ/REP: a REQ socket is stuck after a lost reply, while
DEALER lets the server answer out of order (turns, barriers) and send keep-alives.
Every socket has ``LINGER=0``, a per-frame ``MAXMSGSIZE``, small high-water marks
and ZMTP heartbeats so that a frozen peer drops its connection within seconds.
With CURVE keys (security.py) every connection is encrypted and authenticated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from typing import Any

import zmq

from splitfed.errors import PeerLostError, TransportError
from splitfed.transport.base import MAX_FRAMES, ClientTransport, Frames, ServerTransport, name_in_use
from splitfed.transport.security import CurveClient, CurveServer, secure_client, secure_server
from splitfed.wire import Message, encode

log = logging.getLogger(__name__)

#: Frames smaller than this are copied by pyzmq anyway; larger ones go zero-copy.
ZERO_COPY_MIN = 64 * 1024
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 3000
SCHEMES = ("tcp://", "ipc://", "inproc://")
#: a client that finds no server listening tries again after this many ms (and up to as many again at random),
#: doubling up to RECONNECT_MAX_MS. ZeroMQ's default (100 ms, and up to 100 more at random) held up the clients
#: of a local run, forked with their server, by 0.1-0.2 s whenever they tried before it listened
RECONNECT_MS = 10
RECONNECT_MAX_MS = 100
#: between a client's name and its connection's own token in its ZeroMQ identity: a ROUTER silently ignores
#: a second connection under an identity in use, so each process connects under its own, and the server
#: transport tells a second process claiming a connected name why it is refused
TOKEN_SEP = "\x1f"


def check_address(address: str) -> str:
    if not address.startswith(SCHEMES):
        raise TransportError(
            f"address {address!r} must start with one of {', '.join(SCHEMES)}, e.g. tcp://127.0.0.1:5555"
        )
    return address


def _context(address: str) -> zmq.Context:
    # inproc:// only works between sockets of one context; the shared instance serves that.
    return zmq.Context.instance()


def _common_options(sock: zmq.Socket, max_bytes: int) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_TIMEOUT_MS)


def _send(sock: zmq.Socket, frames: Frames, peer: str, *, block: bool = True) -> bool:
    """Send a message; False if ``block`` is off and it cannot go out at once, or to nobody (it is dropped)."""
    big = any(_nbytes(f) >= ZERO_COPY_MIN for f in frames)
    try:
        # Zero-copy: the caller promises not to modify the tensors behind the frames
        # after sending (the links clone weights; activations and gradients are fresh).
        sock.send_multipart(list(frames), copy=not big, flags=0 if block else zmq.NOBLOCK)
    except zmq.Again as exc:
        if not block:
            return False
        raise PeerLostError(peer, "took no message within the timeout (it may be frozen)") from exc
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:
            if not block:
                return False
            raise PeerLostError(peer, "not connected (it exited or never joined)") from exc
        raise TransportError(f"sending to {peer} failed: {exc}") from exc
    return True


def _poll_recv(sock: zmq.Socket, timeout: float, max_frames: int) -> list[zmq.Frame] | None:
    """The next message's frames, or None after ``timeout`` s; zmq errors become TransportError.

    Frames are read one by one, and those past ``max_frames`` are dropped as they are
    read, so a hostile message with a huge frame count costs no Python memory.
    """
    try:
        if not sock.poll(max(0, int(timeout * 1000))):
            return None
        frames = [sock.recv(copy=False)]
        while sock.getsockopt(zmq.RCVMORE):
            frame = sock.recv(copy=False)
            if len(frames) <= max_frames:
                frames.append(frame)
        return frames
    except zmq.ZMQError as exc:
        raise TransportError(f"receiving failed: {exc}") from exc


def _nbytes(frame: Any) -> int:
    return frame.nbytes if isinstance(frame, memoryview) else len(frame)


class ZmqServerTransport(ServerTransport):
    """ROUTER socket bound to ``address``; peers are known by the name in their DEALER identity.

    A name belongs to one connection at a time: a message from another connection under a name
    whose connection is still up is answered with ``error`` and dropped; once that connection is
    gone (the process ended, or a frozen one missed its heartbeats) the name moves to the new one.
    """

    def __init__(
        self, address: str, *, max_bytes: int, curve: CurveServer | None = None, send_timeout: float = 60.0
    ) -> None:
        self.address = check_address(address)
        self._sock = _context(address).socket(zmq.ROUTER)
        _common_options(self._sock, max_bytes)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A peer that stops reading fills its queue; then a send waits this long, never forever.
        self._sock.setsockopt(zmq.SNDTIMEO, max(1, int(send_timeout * 1000)))
        self._auth = secure_server(self._sock, curve) if curve is not None else None
        try:
            self._sock.bind(address)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise TransportError(
                f"cannot bind {address}: {exc}. Is another server running there? Choose another port with --address."
            ) from exc
        self.address = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or address
        self._routes: dict[str, bytes] = {}  # a name -> the identity of the connection that holds it
        # interrupt() writes a byte to this pipe; recv polls its read end beside the socket
        self._wake_r, self._wake_w = os.pipe()
        self._wake_lock = threading.Lock()  # close() and interrupt() from another thread: never a reused fd
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        log.debug("server bound at %s", self.address)

    def interrupt(self) -> None:
        with self._wake_lock, contextlib.suppress(BlockingIOError):  # a full pipe is woken already
            if self._wake_w >= 0:
                os.write(self._wake_w, b"\0")

    def _readable(self, timeout: float) -> bool:
        """Whether a message waits on the socket within ``timeout`` s; False at once if interrupted."""
        try:
            ready = dict(self._poller.poll(max(0, int(timeout * 1000))))
        except zmq.ZMQError as exc:
            raise TransportError(f"receiving failed: {exc}") from exc
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
            return False
        return self._sock in ready

    def recv(self, timeout: float) -> tuple[str, list[Any]] | None:
        deadline = time.monotonic() + timeout
        while True:
            if not self._readable(max(0.0, deadline - time.monotonic())):
                return None
            frames = _poll_recv(self._sock, 0.0, MAX_FRAMES + 1)  # + identity
            if frames is None:
                return None
            identity = frames[0].bytes
            try:
                peer = identity.decode("utf-8").split(TOKEN_SEP, 1)[0]
            except UnicodeDecodeError:  # not a splitfed client; a made-up name could collide with a member's
                log.debug("dropped a message from a peer whose identity is not UTF-8")
                continue
            named = self._auth is None or len(frames) < 2 or self._named_as(peer, identity, frames[1])
            if named and self._holds(peer, identity):
                return peer, [f.buffer for f in frames[1:]]

    def _holds(self, peer: str, identity: bytes) -> bool:
        """Whether this connection may speak as ``peer``: the name is free, its own, or its holder is gone."""
        holder = self._routes.get(peer)
        if holder is None or holder == identity or not self._up(holder):
            self._routes[peer] = identity
            return True
        log.warning("refused a second connection named %r: a client of that name is connected", peer)
        self._to(identity, encode(Message("error", meta={"error": name_in_use(peer)}, sender="server")))
        return False

    def _up(self, identity: bytes) -> bool:
        """Whether a connection under ``identity`` is up, probed with a keep-alive (which clients skip)."""
        try:
            self._sock.send_multipart([identity, *encode(Message("wait", sender="server"))], flags=zmq.NOBLOCK)
        except zmq.Again:  # connected, and not reading
            return True
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise TransportError(f"probing a connection failed: {exc}") from exc
        return True

    def _to(self, identity: bytes, frames: Frames) -> None:
        """Best effort, never blocking: an answer to a connection that holds no name."""
        try:
            self._sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.debug("could not answer a refused connection: %s", exc)

    def _named_as(self, peer: str, identity: bytes, frame: zmq.Frame) -> bool:
        """With an allow-list, a client's name must be the one its key is listed under."""
        listed = frame.get("User-Id")
        if listed == peer:
            return True
        log.warning("refused a client whose key is listed as %r but who calls itself %r", listed, peer)
        refusal = f"your key is listed as {listed!r}, not {peer!r}: run the client with --name {listed}"
        self._to(identity, encode(Message("error", meta={"error": refusal}, sender="server")))
        return False

    def send(self, peer: str, frames: Frames, *, block: bool = True) -> bool:
        identity = self._routes.get(peer, peer.encode("utf-8"))
        return _send(self._sock, [identity, *frames], peer, block=block)

    def close(self) -> None:
        self._sock.close(0)
        with self._wake_lock:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        if self._auth is not None:
            self._auth.stop()


class ZmqClientTransport(ClientTransport):
    """DEALER socket connected to the server at ``address``, under ``name`` and a token of its own."""

    def __init__(
        self,
        address: str,
        name: str,
        *,
        max_bytes: int,
        connect_timeout: float = 30.0,
        curve: CurveClient | None = None,
    ) -> None:
        self.address, self.name = check_address(address), name
        #: how long a send waits for the connection: the join deadline, then --timeout once joined
        self.connect_timeout = connect_timeout
        self._sock = _context(address).socket(zmq.DEALER)
        _common_options(self._sock, max_bytes)
        if curve is not None:
            secure_client(self._sock, curve)
        self._sock.setsockopt(zmq.IDENTITY, f"{name}{TOKEN_SEP}{secrets.token_hex(6)}".encode())
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise TransportError(f"cannot connect to {address}: {exc}") from exc

    def recv(self, timeout: float) -> list[Any] | None:
        frames = _poll_recv(self._sock, timeout, MAX_FRAMES)
        return None if frames is None else [f.buffer for f in frames]

    def send(self, frames: Frames, *, block: bool = True) -> bool:
        # With IMMEDIATE=1 a send while no connection exists blocks; wait up to connect_timeout.
        peer = f"server at {self.address}"
        try:
            writable = self._sock.poll(int(self.connect_timeout * 1000) if block else 0, zmq.POLLOUT)
        except zmq.ZMQError as exc:
            raise TransportError(f"sending to {peer} failed: {exc}") from exc
        if not writable:
            if not block:
                return False
            raise PeerLostError(
                peer, f"not reachable for {self.connect_timeout:g} s; is `splitfed server` running there?"
            )
        return _send(self._sock, frames, peer, block=block)

    def close(self) -> None:
        self._sock.close(0)
