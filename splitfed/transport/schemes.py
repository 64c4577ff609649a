"""Transports chosen by the address scheme, so that the runtime never names a transport class.

``tcp://``, ``ipc://`` and ``inproc://`` are ZeroMQ; ``memory://`` is the in-process double
(tests, notebooks). Another transport plugs in with :func:`register_scheme`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splitfed.errors import ConfigError
from splitfed.transport.base import ClientTransport, ServerTransport
from splitfed.transport.memory import MemoryClientTransport, MemoryServerTransport
from splitfed.transport.zeromq import ZmqClientTransport, ZmqServerTransport

ServerFactory = Callable[..., ServerTransport]  # (address, *, max_bytes, curve, send_timeout)
ClientFactory = Callable[..., ClientTransport]  # (address, name, *, max_bytes, connect_timeout, curve)

_schemes: dict[str, tuple[ServerFactory, ClientFactory]] = {}
_one_process: set[str] = set()


def register_scheme(
    scheme: str, server_cls: ServerFactory, client_cls: ClientFactory, *, one_process: bool = False
) -> None:
    """Addresses ``scheme://...`` get these two classes (a later registration replaces an earlier one).

    ``one_process``: the server and its clients must live in one process (threads).
    """
    scheme = scheme.removesuffix("://")
    _schemes[scheme] = (server_cls, client_cls)
    (_one_process.add if one_process else _one_process.discard)(scheme)


def known_schemes() -> list[str]:
    return [f"{s}://" for s in sorted(_schemes)]


def one_process_schemes() -> list[str]:
    """Schemes (without ``://``) that join parties within one process only."""
    return sorted(_one_process)


def check_between_processes(address: str, flag: str) -> None:
    """Before a server or client process starts: refuse an unknown scheme, or one no other process can reach."""
    _classes(address)
    scheme = address.partition("://")[0]
    if scheme in _one_process:
        raise ConfigError(
            f"{flag} {address}: {scheme}:// joins parties within one process only (tests, notebooks: "
            "splitfed.testing.run_in_threads); a splitfed server and its clients are separate processes: "
            "use tcp://HOST:PORT or ipc://PATH"
        )


def _classes(address: str) -> tuple[ServerFactory, ClientFactory]:
    scheme, sep, _ = address.partition("://")
    if not sep or scheme not in _schemes:
        raise ConfigError(
            f"address {address!r} has no known scheme: use one of {', '.join(known_schemes())}, "
            "e.g. tcp://127.0.0.1:5555 (memory:// only within one process)"
        )
    return _schemes[scheme]


def server_transport(address: str, *, max_bytes: int, curve: Any = None, send_timeout: float = 60.0) -> ServerTransport:
    """The server end bound at ``address``; ``curve`` (CurveServer) encrypts where the scheme can."""
    return _classes(address)[0](address, max_bytes=max_bytes, curve=curve, send_timeout=send_timeout)


def client_transport(
    address: str, name: str, *, max_bytes: int, connect_timeout: float = 30.0, curve: Any = None
) -> ClientTransport:
    """A client end named ``name``, connecting to the server at ``address``."""
    return _classes(address)[1](address, name, max_bytes=max_bytes, connect_timeout=connect_timeout, curve=curve)


for _scheme in ("tcp", "ipc", "inproc"):
    register_scheme(_scheme, ZmqServerTransport, ZmqClientTransport, one_process=_scheme == "inproc")
register_scheme("memory", MemoryServerTransport, MemoryClientTransport, one_process=True)
