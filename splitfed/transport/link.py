"""Message-level links: codec + transport + byte counters + liveness.

The runtime talks to these two classes, and protocols through :mod:`splitfed.peers`. Every
message is encoded and decoded, whatever the transport underneath (tcp, ipc, inproc or
memory), so the codec is always exercised. Rules:

* every client message is a request that gets exactly one reply, except ``wait``: a
  client's heartbeat during long local work (FedAvg's local epochs);
* while the server owes a client a reply (the client waits on a barrier or a turn),
  it sends ``wait`` keep-alives so the client knows the server is alive;
* a client that owes the server a message and stays silent for ``timeout`` seconds
  is reported lost, by name; so is a server that sends nothing for ``timeout``;
* a malformed message, or one of a kind that is neither the runtime's nor the run's protocol's
  (``kinds``), is answered with ``error`` and dropped; the server goes on;
* a stranger (a peer that is not a member of the run) never ends a run: whatever it
  sends is rejected, and the answer to it is dropped if it cannot leave at once;
* every request carries an id, and every reply the id it answers. A client that hears
  nothing for a while resends its request (the same id); the server answers a repeat of
  a request it already answered from a per-client cache of its last reply, and ignores a
  repeat of one it still owes, so a retried step is never applied twice.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from splitfed.errors import PeerLostError, ProtocolError, RemoteError, WireError
from splitfed.transport.base import ClientTransport, ServerTransport, interrupts
from splitfed.wire import DEFAULT_MAX_BYTES, Message, decode, encode, message_nbytes, tensor_nbytes

log = logging.getLogger(__name__)

POLL_SLICE = 0.25
#: longest pause between keep-alives to a waiting client, whatever the timeouts
KEEPALIVE_MAX = 5.0
#: strangers' rejections logged one by one; after that, one line per this many
LOG_EVERY = 1000


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
    duplicates: int = 0  # repeated requests, answered from the cache or ignored
    retries: int = 0  # requests a client sent again after hearing nothing
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
        kinds: frozenset[str] | None = None,
    ) -> None:
        self.transport, self.timeout, self.max_bytes, self.name = transport, timeout, max_bytes, name
        #: the kinds of this run (the runtime's and its protocol's); any other is refused. None: any well-formed
        self.kinds = kinds
        self._base_timeout = timeout
        self.stats = LinkStats()
        self.clients: list[str] = []  # registered clients, in order of arrival
        #: whether a ``hello`` from a newcomer is welcome; the runtime closes joining once the run starts
        self.accepting = True
        self._owed: dict[str, int] = {}  # client -> id of the request we still owe an answer
        self._last_id: dict[str, int] = {}  # client -> highest request id seen
        self._answered: dict[str, tuple[int, list]] = {}  # client -> (id, frames) of our last reply
        self._last_heard: dict[str, float] = {}
        self._last_told: dict[str, float] = {}
        self._keepalive_for: dict[str, float] = {}  # a member's own keep-alive period, from its patience
        self.round = 0

    @property
    def keepalive_every(self) -> float:
        # Fixed by the timeout the link was made with, so raising ``timeout`` (while clients
        # join) never stretches it, and at most KEEPALIVE_MAX: before ``welcome`` a client
        # waits with its own --timeout, which may be shorter than the server's.
        return max(0.2, min(self._base_timeout / 4, KEEPALIVE_MAX))

    def register(self, peer: str, patience: float | None = None) -> None:
        """Make ``peer`` a member. ``patience``: the seconds it waits for us before it gives up (its own
        --timeout, told in ``hello``); keep-alives to it come at least four times within it."""
        if peer not in self.clients:
            self.clients.append(peer)
            self._last_heard[peer] = time.monotonic()
        if patience is not None and patience > 0:
            self._keepalive_for[peer] = max(0.2, min(self.keepalive_every, patience / 4))

    def forget(self, peer: str) -> None:
        """``peer`` is no longer a member (it was lost): whatever it sends is refused until it joins again."""
        if peer in self.clients:
            self.clients.remove(peer)
        for table in (self._owed, self._last_id, self._answered, self._last_heard, self._last_told):
            table.pop(peer, None)

    def recv(
        self, *, expect: tuple[str, ...] | None = None, pump: Callable[[], bool] | None = None
    ) -> tuple[str, Message]:
        """Next valid request from a registered client (or a ``hello`` while joining is open).

        Malformed messages, messages from strangers and repeated requests are handled
        here and skipped. Raises :class:`PeerLostError` naming a client that owes us a
        message and has been silent for ``timeout`` seconds.

        ``pump``: called before each wait, in this thread, to finish work done meanwhile in
        other threads (which call :meth:`interrupt` when some is ready); it returns whether
        work is still under way, during which clients that all wait on the server are no stall.
        """
        start = time.monotonic()
        while True:
            busy = pump() if pump is not None else False
            got = self.transport.recv(POLL_SLICE)
            now = time.monotonic()
            self._keepalive(now)
            if got is None:
                self._check_silence(now, start, self.timeout, busy)
                continue
            peer, frames = got
            msg = self._admit(peer, frames)
            if msg is None:
                continue
            self.stats.count_received(peer, frames, msg)
            self._last_heard[peer] = now
            if msg.kind == "wait":  # a client's heartbeat during long local work: no reply owed
                continue
            self._owed[peer] = msg.id
            if msg.kind == "error":
                raise RemoteError(peer, str(msg.meta.get("error", "unknown error")))
            if expect is not None and msg.kind not in expect:
                self.reject(peer, f"unexpected {msg.kind!r} now; expected one of {list(expect)}")
                raise ProtocolError(f"{peer} sent {msg.kind!r} when the server expected one of {list(expect)}")
            return peer, msg

    def _admit(self, peer: str, frames: list) -> Message | None:
        """The decoded message if it is to be handled; None if it was rejected or was a repeat."""
        member = peer in self.clients
        try:
            msg = decode(frames, max_bytes=self.max_bytes, kinds=self.kinds)
        except WireError as exc:
            self._refuse(peer, member, f"malformed message rejected: {exc}")
            return None
        if not member:
            if msg.kind == "hello" and self.accepting:
                self._last_id[peer] = msg.id  # a repeated hello is then a repeat, not a second join
                return msg
            why = "unknown client: send 'hello' first (start clients with `splitfed client`)"
            if msg.kind == "hello":
                why = "this run has started and takes no new members"
            self._refuse(peer, member, f"{msg.kind!r} rejected: {why}")
            return None
        if msg.kind == "wait" or msg.id > self._last_id.get(peer, 0):
            self._last_id[peer] = max(msg.id, self._last_id.get(peer, 0))
            return msg
        self.stats.duplicates += 1
        answered = self._answered.get(peer)
        if answered is not None and answered[0] == msg.id:
            log.info("%s repeated request %d: answered again from the cache", peer, msg.id)
            self.transport.send(peer, answered[1])
        else:
            log.info("%s repeated request %d, which is still being answered: ignored", peer, msg.id)
        return None

    def _refuse(self, peer: str, member: bool, text: str) -> None:
        self.stats.rejected += 1
        if member or self.stats.rejected <= 10 or self.stats.rejected % LOG_EVERY == 0:
            log.warning("%s (from %r; %d rejected so far)", text, peer, self.stats.rejected)
        self.reject(peer, text, block=member)

    def reply(self, peer: str, msg: Message) -> None:
        msg.sender = msg.sender or self.name
        msg.round = msg.round or self.round
        msg.id = self._owed.pop(peer, 0)
        frames = encode(msg, kinds=self.kinds)
        self.transport.send(peer, frames)
        self._answered[peer] = (msg.id, frames)
        self.stats.count_sent(peer, frames, msg)
        # The client's silence clock restarts when we hand it the ball.
        self._last_told[peer] = self._last_heard[peer] = time.monotonic()

    def reject(self, peer: str, text: str, *, block: bool = False) -> None:
        """Answer ``peer`` with an ``error`` saying why; never fails (the peer may be gone).

        Unless ``block``, an answer that cannot leave at once is dropped: a stranger that
        never reads must not hold the server up.
        """
        try:
            msg = Message("error", meta={"error": text}, sender=self.name, id=self._owed.pop(peer, 0))
            self.transport.send(peer, encode(msg), block=block)
        except Exception as exc:  # the peer may already be gone; never let that stop the server
            log.debug("could not tell %r about the rejection: %s", peer, exc)

    def stop_all(self, text: str) -> None:
        """Tell every member the run is over, with why (best effort, never blocking)."""
        for peer in self.clients:
            self.reject(peer, text)

    def _keepalive(self, now: float) -> None:
        for peer, owed in list(self._owed.items()):
            if now - self._last_told.get(peer, 0.0) >= self._keepalive_for.get(peer, self.keepalive_every):
                self.transport.send(peer, encode(Message("wait", sender=self.name, id=owed)))
                self._last_told[peer] = now

    def interrupt(self) -> None:
        """Wake a :meth:`recv` in progress (from any thread), so that it calls its ``pump``."""
        self.transport.interrupt()

    def _check_silence(self, now: float, start: float, limit: float, busy: bool = False) -> None:
        silent = [p for p in self.clients if p not in self._owed and now - self._last_heard[p] > limit]
        if silent:
            raise PeerLostError(silent[0], f"sent nothing for {limit:g} s (it may have crashed or frozen)")
        if not busy and now - start > limit and all(p in self._owed for p in self.clients):
            # Everyone registered waits on us, so only a newcomer could speak: a join that stalled.
            raise PeerLostError(
                "clients",
                f"{len(self.clients)} joined, and no more within {limit:g} s; start them with `splitfed client`",
            )

    @property
    def can_interrupt(self) -> bool:
        """Whether :meth:`interrupt` works on this transport (else a pump is only called every POLL_SLICE s)."""
        return interrupts(self.transport)

    def close(self) -> None:
        self.transport.close()


class ClientLink:
    """A client's side: one request, one reply, keep-alives skipped, a silent server asked again."""

    def __init__(
        self,
        transport: ClientTransport,
        *,
        timeout: float = 60.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retries: int = 3,
        kinds: frozenset[str] | None = None,
    ) -> None:
        self.transport, self.timeout, self.max_bytes = transport, timeout, max_bytes
        #: the kinds of this run (the runtime's, and its protocol's once known); None: any well-formed
        self.kinds = kinds
        self.retries = retries
        self.name = transport.name
        self.stats = LinkStats()
        self._next_id = 0
        self._pending: tuple[int, list] | None = None  # (id, frames) of the request awaiting its reply
        self._last_beat = time.monotonic()
        self.round = 0

    @property
    def peer(self) -> str:
        return f"server at {self.transport.address}"

    @property
    def retry_after(self) -> float:
        """Silence after which a request is sent again: longer than the server's keep-alive period."""
        return max(0.5, self.timeout / 3)

    def send(self, msg: Message) -> None:
        """Send a request; its reply is read by :meth:`receive`."""
        self._next_id += 1
        msg.sender, msg.id, msg.round = self.name, self._next_id, msg.round or self.round
        frames = encode(msg, kinds=self.kinds)
        self.transport.send(frames)
        self.stats.count_sent("server", frames, msg)
        self._pending = (msg.id, frames)

    def heartbeat(self) -> None:
        """Tell the server we are alive during long local work (rate-limited; no reply)."""
        now = time.monotonic()
        if now - self._last_beat >= max(0.2, self.timeout / 4):
            frames = encode(Message("wait", sender=self.name, round=self.round))
            self.transport.send(frames)
            self._last_beat = now

    def tell(self, msg: Message) -> None:
        """Best effort and never blocking: a last word to a server that may be gone."""
        self._next_id += 1
        msg.sender, msg.id, msg.round = self.name, self._next_id, msg.round or self.round
        try:
            self.transport.send(encode(msg), block=False)
        except Exception as exc:  # the server may be the thing that failed
            log.debug("could not tell the server: %s", exc)

    def receive(self, *, expect: tuple[str, ...] | None = None) -> Message:
        """The reply to the pending request. A stale repeat of an older reply is skipped."""
        heard = time.monotonic()
        retries = 0
        while True:
            frames = self.transport.recv(POLL_SLICE)
            now = time.monotonic()
            if frames is None:
                if now - heard >= self.timeout:
                    raise PeerLostError(self.peer, f"no answer for {self.timeout:g} s (it may have crashed or frozen)")
                if now - heard >= self.retry_after * (retries + 1) and retries < self.retries and self._pending:
                    retries += 1
                    self.stats.retries += 1
                    log.info("no answer to request %d for %.1f s: sending it again", self._pending[0], now - heard)
                    self.transport.send(self._pending[1], block=False)
                continue
            msg = decode(frames, max_bytes=self.max_bytes, kinds=self.kinds)
            self.stats.count_received("server", frames, msg)
            heard = now
            if msg.kind == "wait":
                continue
            if msg.kind == "error":
                raise RemoteError("server", str(msg.meta.get("error", "unknown error")))
            if self._pending is not None and msg.id != self._pending[0]:
                log.debug("skipped a repeated answer to request %d", msg.id)
                continue
            self._pending = None
            if expect is not None and msg.kind not in expect:
                raise ProtocolError(f"the server sent {msg.kind!r}; this client expected one of {list(expect)}")
            return msg

    def request(self, msg: Message, *, expect: tuple[str, ...] | None = None) -> Message:
        self.send(msg)
        return self.receive(expect=expect)

    def close(self) -> None:
        self.transport.close()
