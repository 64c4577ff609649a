"""In-process transport for ``memory://NAME``: the test double of the ZeroMQ transport.

Server and clients live in one process (threads: tests, notebooks). Every message still
passes through the codec: the links encode it to frames, this transport copies the
frames into the receiver's queue as bytes, and the receiver gets them as read-only
memoryviews, exactly as the ZeroMQ transport hands them over. Nothing is shared between
sender and receiver. Where the links can tell, it behaves as the ZeroMQ transport does:

* one server per name (binding a bound name fails); closing it frees the name;
* a client may be made before its server binds: a blocking send waits up to
  ``connect_timeout`` for a connection (ZeroMQ's ``IMMEDIATE``), a non-blocking one
  returns False, a receive just waits;
* a client whose name is taken by a connected client is not admitted: each of its sends is
  answered with ``error`` (the ZeroMQ server transport's refusal), until the name is free;
* a message with a frame over the receiver's ``max_bytes`` is dropped unseen (ZeroMQ's
  per-frame ``MAXMSGSIZE``); frames past the decoder's cap are cut off as the ZeroMQ
  transport cuts them, so the decoder rejects the message;
* each direction of a connection queues at most ``HWM`` messages. A full queue holds a
  blocking send (the server's up to ``send_timeout``, then PeerLostError) and makes a
  non-blocking one return False;
* the server's send to a client that is not connected (closed, or never came) raises
  PeerLostError, or returns False with ``block=False`` (``ROUTER_MANDATORY``);
* messages already delivered stay readable after the sender closes; a client whose
  server closed connects again when a server binds the name anew.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from splitfed.errors import ConfigError, PeerLostError, TransportError
from splitfed.transport.base import MAX_FRAMES, ClientTransport, Frames, ServerTransport, name_in_use
from splitfed.wire import Message, encode

log = logging.getLogger(__name__)

SCHEME = "memory://"
#: messages queued per direction of one connection (the ZeroMQ transport's high-water mark)
HWM = 64
#: how often an unconnected client looks for its server
CONNECT_POLL = 0.01

_hubs: dict[str, _Hub] = {}
_hubs_lock = threading.Lock()


class _Hub:
    """One bound name: the server's queue and the connected clients, all under one condition."""

    def __init__(self, name: str, max_bytes: int) -> None:
        self.name, self.max_bytes = name, max_bytes
        self.cond = threading.Condition()
        self.inbox: deque[tuple[str, list[bytes]]] = deque()
        self.queued: Counter[str] = Counter()  # messages from each client waiting in ``inbox``
        self.peers: dict[str, MemoryClientTransport] = {}
        self.open = True


def _name_of(address: str) -> str:
    name = address[len(SCHEME) :] if address.startswith(SCHEME) else ""
    if not name:
        raise ConfigError(f"address {address!r}: a memory transport needs a name, e.g. memory://test-1")
    return name


def _refuse_curve(curve: Any) -> None:
    if curve is not None:
        raise ConfigError(
            "memory:// never leaves this process and has no encryption: drop the CurveZMQ keys, or use tcp:// or ipc://"
        )


def _copy(frames: Frames) -> list[bytes]:
    """Private bytes of every frame: the sender may change its buffers as soon as send returns."""
    return [memoryview(f).tobytes() for f in frames]


def _admissible(frames: list[bytes], max_bytes: int, receiver: str) -> list[bytes] | None:
    """What the receiver would get: nothing if a frame is over its limit, else at most MAX_FRAMES + 1 frames."""
    if any(len(f) > max_bytes for f in frames):
        log.debug("dropped a message to %s with a frame over %d bytes", receiver, max_bytes)
        return None
    return frames[: MAX_FRAMES + 1]


def _views(frames: list[bytes]) -> list[Any]:
    return [memoryview(f) for f in frames]


class MemoryServerTransport(ServerTransport):
    """The server end of ``memory://NAME``: binds NAME in this process until closed."""

    def __init__(self, address: str, *, max_bytes: int, curve: Any = None, send_timeout: float = 60.0) -> None:
        _refuse_curve(curve)
        self.address, self.send_timeout = address, send_timeout
        self._hub = _Hub(_name_of(address), max_bytes)
        with _hubs_lock:
            if self._hub.name in _hubs:
                raise TransportError(
                    f"cannot bind {address}: another server in this process is bound there; choose another name"
                )
            _hubs[self._hub.name] = self._hub
        self._woken = False  # set by interrupt(), under the hub's lock

    def interrupt(self) -> None:
        with self._hub.cond:
            self._woken = True
            self._hub.cond.notify_all()

    def recv(self, timeout: float) -> tuple[str, list[Any]] | None:
        hub = self._hub
        with hub.cond:
            if not hub.cond.wait_for(lambda: hub.inbox or not hub.open or self._woken, max(0.0, timeout)):
                return None
            if self._woken:
                self._woken = False
                return None
            if not hub.open:
                raise TransportError(f"receiving failed: the server at {self.address} is closed")
            peer, frames = hub.inbox.popleft()
            hub.queued[peer] -= 1
            hub.cond.notify_all()
        return peer, _views(frames)

    def send(self, peer: str, frames: Frames, *, block: bool = True) -> bool:
        hub, data = self._hub, _copy(frames)
        with hub.cond:
            if not hub.open:
                raise TransportError(f"sending to {peer} failed: the server at {self.address} is closed")

            def room() -> bool:
                client = hub.peers.get(peer)
                return client is None or len(client.inbox) < HWM

            hub.cond.wait_for(room, self.send_timeout if block else 0.0)
            client = hub.peers.get(peer)
            if client is None or len(client.inbox) >= HWM:
                if not block:
                    return False
                if client is None:
                    raise PeerLostError(peer, "not connected (it exited or never joined)")
                raise PeerLostError(peer, "took no message within the timeout (it may be frozen)")
            kept = _admissible(data, client.max_bytes, peer)
            if kept is not None:
                client.inbox.append(kept)
                hub.cond.notify_all()
        return True

    def close(self) -> None:
        hub = self._hub
        with _hubs_lock:
            if _hubs.get(hub.name) is hub:
                del _hubs[hub.name]
        with hub.cond:
            hub.open = False
            hub.peers.clear()
            hub.inbox.clear()
            hub.cond.notify_all()


class MemoryClientTransport(ClientTransport):
    """A client of ``memory://NAME``, known to the server as ``name``."""

    def __init__(
        self, address: str, name: str, *, max_bytes: int, connect_timeout: float = 30.0, curve: Any = None
    ) -> None:
        _refuse_curve(curve)
        self.address, self.name, self.max_bytes = address, name, max_bytes
        self.connect_timeout = connect_timeout
        self._target = _name_of(address)
        #: messages from the server; guarded by the condition of the hub we are connected to
        self.inbox: deque[list[bytes]] = deque()
        self._hub: _Hub | None = None
        self._closed = False
        self._connect()

    def _connect(self) -> _Hub | None:
        """The server we are connected to, connecting now if one is bound and our name is free there."""
        if self._closed:
            raise TransportError(f"the client {self.name} to {self.address} is closed")
        hub = self._hub
        if hub is not None and hub.open:
            return hub
        self._hub = None
        with _hubs_lock:
            hub = _hubs.get(self._target)
        if hub is None:
            return None
        with hub.cond:
            if not hub.open or hub.peers.setdefault(self.name, self) is not self:
                return None
        self._hub = hub
        return hub

    def _connected(self, hub: _Hub) -> bool:
        return hub.open and hub.peers.get(self.name) is self

    def _taken(self) -> bool:
        """Whether a server is bound and another client holds our name there."""
        with _hubs_lock:
            hub = _hubs.get(self._target)
        if hub is None:
            return False
        with hub.cond:
            return hub.open and hub.peers.get(self.name) not in (None, self)

    def recv(self, timeout: float) -> list[Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            hub = self._connect()
            if hub is None:  # only messages of an earlier connection can be there
                if self.inbox:
                    return _views(self.inbox.popleft())
            else:
                with hub.cond:
                    hub.cond.wait_for(
                        lambda hub=hub: self.inbox or not self._connected(hub), max(0.0, deadline - time.monotonic())
                    )
                    if self.inbox:
                        frames = self.inbox.popleft()
                        hub.cond.notify_all()
                        return _views(frames)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if hub is None:
                time.sleep(min(CONNECT_POLL, left))

    def send(self, frames: Frames, *, block: bool = True) -> bool:
        data = _copy(frames)
        deadline = time.monotonic() + (self.connect_timeout if block else 0.0)
        while True:
            hub = self._connect()
            if hub is None and self._taken():  # told at once, as the ZeroMQ server transport tells it
                self.inbox.append(_copy(encode(Message("error", meta={"error": name_in_use(self.name)}))))
                return True
            if hub is not None:
                with hub.cond:
                    hub.cond.wait_for(
                        lambda hub=hub: not self._connected(hub) or hub.queued[self.name] < HWM,
                        max(0.0, deadline - time.monotonic()),
                    )
                    if self._connected(hub) and hub.queued[self.name] < HWM:
                        kept = _admissible(data, hub.max_bytes, f"server at {self.address}")
                        if kept is not None:
                            hub.inbox.append((self.name, kept))
                            hub.queued[self.name] += 1
                            hub.cond.notify_all()
                        return True
            left = deadline - time.monotonic()
            if left <= 0:
                if not block:
                    return False
                raise PeerLostError(
                    f"server at {self.address}",
                    f"not reachable for {self.connect_timeout:g} s; is its server running in this process?",
                )
            if hub is None:
                time.sleep(min(CONNECT_POLL, left))

    def close(self) -> None:
        self._closed = True
        hub, self._hub = self._hub, None
        if hub is not None:
            with hub.cond:
                if hub.peers.get(self.name) is self:
                    del hub.peers[self.name]
                hub.cond.notify_all()
