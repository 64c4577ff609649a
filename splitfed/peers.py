"""The peers interface roles talk through: :class:`Clients` on the server, :class:`Server` on a client.

A protocol never sees a socket or a link. The server role asks for what it needs from the
clients as a whole: ``gather(kind)`` receives until every client has sent ``kind`` once
(serving other kinds meanwhile through handlers), ``reply``/``reply_all`` answer. Keep-alives,
retries, request ids, byte counts and the refusal of undeclared kinds stay in the link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from splitfed.errors import ProtocolError
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.wire import Message

#: handles a message received while gathering another kind: (peer, message) -> None
Handler = Callable[[str, Message], None]


class Clients:
    """The server's view of the run's clients (in client order), over a :class:`ServerLink`."""

    def __init__(self, link: ServerLink) -> None:
        self._link = link

    @property
    def names(self) -> list[str]:
        return list(self._link.clients)

    def __len__(self) -> int:
        return len(self._link.clients)

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
    ) -> dict[str, Message]:
        """Receive until every client (of ``among``, default all) has sent ``kind`` once.

        The ``kind`` requests are left unanswered (answer them with :meth:`reply` or
        :meth:`reply_all`). Messages of a kind in ``on`` go to its handler meanwhile; ``each``
        sees every gathered message as it arrives. A second ``kind`` from one client, or a kind
        neither gathered nor handled, is a :class:`ProtocolError`. Returns the messages in client order.
        """
        on = dict(on or {})
        waiting = list(among) if among is not None else self.names
        expect = (kind, *on)
        got: dict[str, Message] = {}
        while len(got) < len(waiting):
            peer, msg = self._link.recv(expect=expect)
            if msg.kind != kind:
                on[msg.kind](peer, msg)
                continue
            if peer in got:
                raise ProtocolError(f"{peer} sent {kind!r} twice in one round")
            if peer not in waiting:
                raise ProtocolError(f"{peer} sent {kind!r}, which only {waiting} were asked for")
            got[peer] = msg
            if each is not None:
                each(peer, msg)
        return {p: got[p] for p in waiting}

    def recv(self, *expect: str) -> tuple[str, Message]:
        """The next request (of one of the ``expect`` kinds, if given), for exchanges sequential by nature."""
        return self._link.recv(expect=expect or None)

    def reply(self, peer: str, msg: Message) -> None:
        self._link.reply(peer, msg)

    def reply_all(self, msg: Message | Callable[[str], Message], *, among: Iterable[str] | None = None) -> None:
        """Answer every client (of ``among``): the same message, or ``msg(peer)`` for each."""
        for peer in list(among) if among is not None else self.names:
            self._link.reply(peer, msg(peer) if callable(msg) else msg)


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
