"""The two transport interfaces. A transport moves lists of frames and nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from splitfed.wire import DEFAULT_MAX_TENSORS

Frames = Sequence[Any]  # bytes, memoryview or zmq.Frame: anything with the buffer protocol
#: frames kept of one message; the decoder rejects more (the header frame + its tensor cap)
MAX_FRAMES = DEFAULT_MAX_TENSORS + 1


def name_in_use(name: str) -> str:
    """What a second process claiming a connected client's name is told (by either transport)."""
    return (
        f"name {name!r} is already connected to this server (another process uses it); choose another --name, "
        "or stop that process first"
    )


class ServerTransport(ABC):
    """The server end: many peers, each known by a name it chose."""

    address: str

    @abstractmethod
    def recv(self, timeout: float) -> tuple[str, list[Any]] | None:
        """Next (peer, frames), or None if nothing arrived within ``timeout`` seconds."""

    @abstractmethod
    def send(self, peer: str, frames: Frames, *, block: bool = True) -> bool:
        """Send frames to ``peer``; raise PeerLostError if the peer is not connected.

        With ``block=False`` a message that cannot leave at once is dropped (returns False):
        for answers to strangers, which must never hold the server up.
        """

    def interrupt(self) -> None:
        """Make a ``recv`` in progress, or the next one, return None at once. Safe from any thread:
        a worker thread calls it when its result is ready for the thread that serves the socket.

        Optional: a transport without it (see :func:`interrupts`) gets a server that steps its
        clients' batches in lockstep instead of as they come."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None: ...


def interrupts(transport: ServerTransport) -> bool:
    """Whether ``transport`` implements :meth:`ServerTransport.interrupt`."""
    return type(transport).interrupt is not ServerTransport.interrupt


class ClientTransport(ABC):
    """The client end: one server."""

    address: str
    name: str

    @abstractmethod
    def recv(self, timeout: float) -> list[Any] | None:
        """Next frames from the server, or None after ``timeout`` seconds."""

    #: how long a blocking send waits for a connection to the server
    connect_timeout: float

    @abstractmethod
    def send(self, frames: Frames, *, block: bool = True) -> bool:
        """Send frames to the server; with ``block=False``, drop them (False) if they cannot leave at once."""

    @abstractmethod
    def close(self) -> None: ...
