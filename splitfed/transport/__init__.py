"""Transport layer: moves frames between parties. Knows nothing of models.

``base`` holds the two small interfaces, ``zeromq`` the ZeroMQ implementation
(tcp://, ipc://, inproc://), ``link`` the message-level wrappers that add the codec,
byte counters, keep-alives and peer liveness.
"""

from splitfed.transport.base import ClientTransport, ServerTransport
from splitfed.transport.link import ClientLink, LinkStats, ServerLink
from splitfed.transport.zeromq import ZmqClientTransport, ZmqServerTransport

__all__ = [
    "ClientLink",
    "ClientTransport",
    "LinkStats",
    "ServerLink",
    "ServerTransport",
    "ZmqClientTransport",
    "ZmqServerTransport",
]
