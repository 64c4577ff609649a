"""Transport layer: moves frames between parties. Knows nothing of models.

``base`` holds the two small interfaces, ``zeromq`` the ZeroMQ implementation
(tcp://, ipc://, inproc://), ``memory`` the in-process double (memory://), ``schemes``
the choice of one by the address, and ``link`` the message-level wrappers that add the
codec, byte counters, keep-alives and peer liveness.
"""

from splitfed.transport.base import ClientTransport, ServerTransport
from splitfed.transport.link import ClientLink, LinkStats, ServerLink
from splitfed.transport.memory import MemoryClientTransport, MemoryServerTransport
from splitfed.transport.schemes import client_transport, known_schemes, register_scheme, server_transport
from splitfed.transport.zeromq import ZmqClientTransport, ZmqServerTransport

__all__ = [
    "ClientLink",
    "ClientTransport",
    "LinkStats",
    "MemoryClientTransport",
    "MemoryServerTransport",
    "ServerLink",
    "ServerTransport",
    "ZmqClientTransport",
    "ZmqServerTransport",
    "client_transport",
    "known_schemes",
    "register_scheme",
    "server_transport",
]
