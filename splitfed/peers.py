"""The peers interface roles talk through: :class:`Clients` on the server, :class:`Server` on a client.

A protocol never sees a socket or a link. The server role asks for what it needs from the
clients as a whole: ``gather(kind)`` receives until every client has sent ``kind`` once
(serving other kinds meanwhile through handlers), ``reply``/``reply_all`` answer. Keep-alives,
retries, request ids, byte counts and the refusal of undeclared kinds stay in the link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from splitfed.errors import PeerLostError, ProtocolError
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.wire import Message

#: handles a message received while gathering another kind: (peer, message) -> None
Handler = Callable[[str, Message], None]
#: told that a member was lost mid-round: (peer, error) -> None; raises to end the run
LossPolicy = Callable[[str, PeerLostError], None]


class _MembersLost(Exception):
    """Raised by gather's pump wrapper: a member it waits for was dropped while the pump answered it."""


class Clients:
    """The server's view of the run's clients (in client order), over a :class:`ServerLink`."""

    def __init__(self, link: ServerLink) -> None:
        self._link = link
        #: the runtime's kinds served whatever a role gathers (a rejoiner's hello, a sitting-out client's idle)
        self.background: dict[str, Handler] = {}
        #: the round's participants (None: every member); a role's gather defaults to them
        self.scope: list[str] | None = None
        #: set by the runtime with --min-clients: drops a lost member (or raises); None: a loss ends the run
        self.on_lost: LossPolicy | None = None

    @property
    def names(self) -> list[str]:
        """The members this phase of the round is about, in client order (lost ones left out)."""
        members = self._link.clients
        return [p for p in self.scope if p in members] if self.scope is not None else list(members)

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    @property
    def round(self) -> int:
        return self._link.round

    def gather(
        self,
        kind: str,
        *,
        on: Mapping[str, Handler] | None = None,
        among: Iterable[str] | None = None,
        each: Handler | None = None,
        lost: Callable[[str], None] | None = None,
        pump: Callable[[], bool] | None = None,
    ) -> dict[str, Message]:
        """Receive until every client (of ``among``, default all) has sent ``kind`` once.

        The ``kind`` requests are left unanswered (answer them with :meth:`reply` or
        :meth:`reply_all`). Messages of a kind in ``on`` go to its handler meanwhile; ``each``
        sees every gathered message as it arrives. A second ``kind`` from one client, or a kind
        neither gathered nor handled, is a :class:`ProtocolError`. Returns the messages in client order.

        With a loss policy (``--min-clients``), a member lost meanwhile is dropped from the
        wait (and from the result); ``lost(peer)`` lets the role forget its part of the round.

        ``pump`` finishes, in this thread, work that other threads did meanwhile (see
        :class:`~splitfed.protocols.concurrent_steps.Overlapped`); they wake the wait with :meth:`interrupt`.
        """
        on = {**self.background, **(on or {})}
        waiting = list(among) if among is not None else self.names
        expect = (kind, *on)
        got: dict[str, Message] = {}

        def pumped() -> bool:  # a member lost while the pump answered it ends the wait, which may be for it alone
            busy = pump() if pump is not None else False
            if any(p not in self._link.clients for p in waiting):
                raise _MembersLost
            return busy

        while len(got) < len(waiting):
            msg = None
            try:
                peer, msg = self._link.recv(expect=expect, pump=pumped if pump is not None else None)
                if msg.kind != kind:
                    on[msg.kind](peer, msg)
            except PeerLostError as exc:
                self.drop(exc)
            except _MembersLost:
                pass
            self._leave_out_lost(waiting, got, lost)  # dropped here, or while a handler or the pump answered it
            if msg is None or msg.kind != kind:
                continue
            if peer in got:
                raise ProtocolError(f"{peer} sent {kind!r} twice in one round")
            if peer not in waiting:
                raise ProtocolError(f"{peer} sent {kind!r}, which only {waiting} were asked for")
            got[peer] = msg
            if each is not None:
                each(peer, msg)
        return {p: got[p] for p in waiting if p in got}

    def _leave_out_lost(self, waiting: list[str], got: dict[str, Message], lost: Callable[[str], None] | None) -> None:
        for p in [p for p in waiting if p not in self._link.clients]:
            waiting.remove(p)
            got.pop(p, None)
            if lost is not None:
                lost(p)

    def interrupt(self) -> None:
        """Wake a :meth:`gather` in progress so that it calls its ``pump`` (safe from any thread)."""
        self._link.interrupt()

    @property
    def can_interrupt(self) -> bool:
        """Whether this server's transport can be woken by :meth:`interrupt`."""
        return self._link.can_interrupt

    def drop(self, exc: PeerLostError) -> str:
        """Apply the loss policy to a lost member (re-raising without one); returns its name."""
        if self.on_lost is None or exc.peer not in self._link.clients:
            raise exc
        self.on_lost(exc.peer, exc)
        return exc.peer

    def recv(self, *expect: str) -> tuple[str, Message]:
        """The next request (of one of the ``expect`` kinds, if given), for exchanges sequential by nature."""
        return self._link.recv(expect=expect or None)

    def reply(self, peer: str, msg: Message) -> None:
        """Answer ``peer``; with a loss policy, a member gone meanwhile is dropped instead of ending the run."""
        try:
            self._link.reply(peer, msg)
        except PeerLostError as exc:
            self.drop(PeerLostError(peer, str(exc)) if exc.peer != peer else exc)

    def reply_all(self, msg: Message | Callable[[str], Message], *, among: Iterable[str] | None = None) -> None:
        """Answer every client (of ``among``): the same message, or ``msg(peer)`` for each."""
        for peer in list(among) if among is not None else self.names:
            self.reply(peer, msg(peer) if callable(msg) else msg)


class Server:
    """A client's view of the server, over a :class:`ClientLink`: one request, one reply."""

    def __init__(self, link: ClientLink) -> None:
        self._link = link

    @property
    def round(self) -> int:
        return self._link.round

    def request(self, msg: Message, *expect: str) -> Message:
        """Send ``msg`` and return the reply, which must be of one of the ``expect`` kinds."""
        return self._link.request(msg, expect=expect or None)

    def send(self, msg: Message) -> None:
        """Send a request whose reply someone else reads (the runtime, after ``eval_done``)."""
        self._link.send(msg)

    def heartbeat(self) -> None:
        """Tell the server we are alive during long local work (rate-limited; no reply)."""
        self._link.heartbeat()
