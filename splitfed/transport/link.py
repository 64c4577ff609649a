"""Message-level links: codec + transport + byte counters + liveness.

Protocols talk only to these two classes. Every message is encoded and decoded,
whatever the transport underneath (tcp, ipc or inproc), so the codec is always
exercised. Rules:

* every client message is a request that gets exactly one reply, except ``wait``: a
  client's heartbeat during long local work (FedAvg's local epochs);
* while the server owes a client a reply (the client waits on a barrier or a turn),
  it sends ``wait`` keep-alives so the client knows the server is alive;
* a client that owes the server a message and stays silent for ``timeout`` seconds
  is reported lost, by name; so is a server that sends nothing for ``timeout``;
* a malformed message is answered with ``error`` and dropped; the server goes on.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

from splitfed.errors import PeerLostError, ProtocolError, RemoteError, WireError
from splitfed.transport.base import ClientTransport, ServerTransport
from splitfed.wire import DEFAULT_MAX_BYTES, Message, decode, encode, message_nbytes, tensor_nbytes

log = logging.getLogger(__name__)

POLL_SLICE = 0.25


@dataclass
class LinkStats:
    """Bytes and messages through one link; ``tensor_bytes_*`` counts raw tensor payload only."""

    bytes_sent: int = 0
    bytes_received: int = 0
    tensor_bytes_sent: int = 0
    tensor_bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rejected: int = 0
    by_peer: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: {"sent": 0, "received": 0}))

    def count_sent(self, peer: str, frames: list, msg: Message) -> None:
        n = message_nbytes(frames)
        self.bytes_sent += n
        self.tensor_bytes_sent += tensor_nbytes(msg.tensors)
        self.messages_sent += 1
        self.by_peer[peer]["sent"] += n

    def count_received(self, peer: str, frames: list, msg: Message) -> None:
        n = message_nbytes(frames)
        self.bytes_received += n
        self.tensor_bytes_received += tensor_nbytes(msg.tensors)
        self.messages_received += 1
        self.by_peer[peer]["received"] += n


class ServerLink:
    """The server's side: receive from any client, reply to one."""

    def __init__(
        self,
        transport: ServerTransport,
        *,
        timeout: float = 60.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        name: str = "server",
    ) -> None:
        self.transport, self.timeout, self.max_bytes, self.name = transport, timeout, max_bytes, name
        self._base_timeout = timeout
        self.stats = LinkStats()
        self.clients: list[str] = []  # registered clients, in order of arrival
        self._owed: set[str] = set()  # clients waiting on a reply from us
        self._last_heard: dict[str, float] = {}
        self._last_told: dict[str, float] = {}
        self.round = 0

    @property
    def keepalive_every(self) -> float:
        # fixed by the timeout the link was made with, so raising ``timeout`` (while clients
        # join) never lets the clients' own shorter timeout run out between keep-alives
        return max(0.2, self._base_timeout / 4)

    def register(self, peer: str) -> None:
        if peer not in self.clients:
            self.clients.append(peer)
            self._last_heard[peer] = time.monotonic()

    def recv(self, *, expect: tuple[str, ...] | None = None) -> tuple[str, Message]:
        """Next valid message from a registered client (or a ``hello`` from anyone).

        Malformed messages and messages from strangers are answered with ``error``
        and skipped. Raises :class:`PeerLostError` naming a client that owes us a
        message and has been silent for ``timeout`` seconds.
        """
        start = time.monotonic()
        while True:
            got = self.transport.recv(POLL_SLICE)
            now = time.monotonic()
            self._keepalive(now)
            if got is None:
                self._check_silence(now, start, self.timeout)
                continue
            peer, frames = got
            try:
                msg = decode(frames, max_bytes=self.max_bytes)
            except WireError as exc:
                self.stats.rejected += 1
                log.warning("rejected a malformed message from %r: %s", peer, exc)
                self.reject(peer, f"malformed message rejected: {exc}")
                continue
            if peer not in self.clients and msg.kind != "hello":
                self.stats.rejected += 1
                log.warning("rejected a %r message from unknown peer %r", msg.kind, peer)
                self.reject(peer, "unknown client: send 'hello' first (start clients with `splitfed client`)")
                continue
            self.stats.count_received(peer, frames, msg)
            self._last_heard[peer] = now
            if msg.kind == "wait":  # a client's heartbeat during long local work: no reply owed
                continue
            self._owed.add(peer)
            if msg.kind == "error":
                raise RemoteError(peer, str(msg.meta.get("error", "unknown error")))
            if expect is not None and msg.kind not in expect:
                self.reject(peer, f"unexpected {msg.kind!r} now; expected one of {list(expect)}")
                raise ProtocolError(f"{peer} sent {msg.kind!r} when the server expected one of {list(expect)}")
            return peer, msg

    def reply(self, peer: str, msg: Message) -> None:
        msg.sender = msg.sender or self.name
        msg.round = msg.round or self.round
        frames = encode(msg)
        self.transport.send(peer, frames)
        self.stats.count_sent(peer, frames, msg)
        self._owed.discard(peer)
        # The client's silence clock restarts when we hand it the ball.
        self._last_told[peer] = self._last_heard[peer] = time.monotonic()

    def reject(self, peer: str, text: str) -> None:
        """Answer ``peer`` with an ``error`` saying why; never fails (the peer may be gone)."""
        try:
            frames = encode(Message("error", meta={"error": text}, sender=self.name))
            self.transport.send(peer, frames)
            self._owed.discard(peer)
        except Exception as exc:  # the peer may already be gone; never let that stop the server
            log.debug("could not tell %r about the rejection: %s", peer, exc)

    def _keepalive(self, now: float) -> None:
        for peer in list(self._owed):
            if now - self._last_told.get(peer, 0.0) >= self.keepalive_every:
                self.transport.send(peer, encode(Message("wait", sender=self.name)))
                self._last_told[peer] = now

    def _check_silence(self, now: float, start: float, limit: float) -> None:
        silent = [p for p in self.clients if p not in self._owed and now - self._last_heard[p] > limit]
        if silent:
            raise PeerLostError(silent[0], f"sent nothing for {limit:g} s (it may have crashed or frozen)")
        if now - start > limit and all(p in self._owed for p in self.clients):
            # Everyone registered waits on us, so only a newcomer could speak: a join that stalled.
            raise PeerLostError(
                "clients",
                f"{len(self.clients)} joined, and no more within {limit:g} s; start them with `splitfed client`",
            )

    def close(self) -> None:
        self.transport.close()


class ClientLink:
    """A client's side: one request, one reply, keep-alives skipped."""

    def __init__(
        self,
        transport: ClientTransport,
        *,
        timeout: float = 60.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.transport, self.timeout, self.max_bytes = transport, timeout, max_bytes
        self.name = transport.name
        self.stats = LinkStats()
        self._next_id = 0
        self._last_beat = time.monotonic()
        self.round = 0

    @property
    def peer(self) -> str:
        return f"server at {self.transport.address}"

    def send(self, msg: Message) -> None:
        self._next_id += 1
        msg.sender, msg.id, msg.round = self.name, self._next_id, msg.round or self.round
        frames = encode(msg)
        self.transport.send(frames)
        self.stats.count_sent("server", frames, msg)

    def heartbeat(self) -> None:
        """Tell the server we are alive during long local work (rate-limited; no reply)."""
        now = time.monotonic()
        if now - self._last_beat >= max(0.2, self.timeout / 4):
            self.send(Message("wait"))
            self._last_beat = now

    def receive(self, *, expect: tuple[str, ...] | None = None) -> Message:
        deadline = time.monotonic() + self.timeout
        while True:
            frames = self.transport.recv(min(POLL_SLICE, max(0.0, deadline - time.monotonic())))
            if frames is None:
                if time.monotonic() >= deadline:
                    raise PeerLostError(self.peer, f"no answer for {self.timeout:g} s (it may have crashed or frozen)")
                continue
            msg = decode(frames, max_bytes=self.max_bytes)
            self.stats.count_received("server", frames, msg)
            if msg.kind == "wait":
                deadline = time.monotonic() + self.timeout
                continue
            if msg.kind == "error":
                raise RemoteError("server", str(msg.meta.get("error", "unknown error")))
            if expect is not None and msg.kind not in expect:
                raise ProtocolError(f"the server sent {msg.kind!r}; this client expected one of {list(expect)}")
            return msg

    def request(self, msg: Message, *, expect: tuple[str, ...] | None = None) -> Message:
        self.send(msg)
        return self.receive(expect=expect)

    def close(self) -> None:
        self.transport.close()
