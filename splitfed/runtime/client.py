"""The client process: join a server, learn the run's configuration, train until told to stop."""

from __future__ import annotations

import logging

from splitfed import __version__, registry
from splitfed.config import RunConfig
from splitfed.protocol import Assignment, DataRequest
from splitfed.runtime.server import resolve_device, set_threads
from splitfed.transport.link import ClientLink
from splitfed.transport.security import CurveClient
from splitfed.transport.zeromq import ZmqClientTransport
from splitfed.wire import DEFAULT_MAX_BYTES, Message

log = logging.getLogger(__name__)


def run_client(
    server: str,
    name: str,
    data: DataRequest,
    *,
    device: str = "cpu",
    timeout: float = 60.0,
    threads: int = 0,
    curve: CurveClient | None = None,
    join_timeout: float | None = None,
) -> int:
    """Take part in one run; returns the number of rounds trained."""
    transport = ZmqClientTransport(
        server, name, max_bytes=DEFAULT_MAX_BYTES, connect_timeout=join_timeout or timeout, curve=curve
    )
    link = ClientLink(transport, timeout=timeout)
    try:
        welcome = link.request(Message("hello", meta={"version": __version__}), expect=("welcome",))
        config = RunConfig.from_dict({**welcome.meta["config"], "device": device, "data": data.source})
        link.timeout, link.max_bytes = config.timeout, config.max_bytes
        set_threads(threads, config.clients + 1)
        assignment = Assignment(config, int(welcome.meta["index"]), int(welcome.meta["clients"]))
        log.info("%s is client %d of %d in a %s run", name, assignment.index, assignment.clients, config.protocol)
        role = registry.get(config.protocol).client(assignment, data, resolve_device(device), name)
        role.setup(link)
        rnd = int(welcome.meta.get("start_round", 1)) - 1
        while True:
            rnd += 1
            link.round = rnd
            role.train_round(link, rnd)
            role.evaluate(link, rnd)
            if link.receive(expect=("ack", "done")).kind == "done":
                return rnd
    except Exception as exc:
        _tell_server(link, exc)
        raise
    finally:
        link.close()


def _tell_server(link: ClientLink, exc: Exception) -> None:
    """Best effort: let the server report why this client stops, instead of a bare timeout."""
    try:
        link.send(Message("error", meta={"error": f"{type(exc).__name__}: {exc}"}))
    except Exception:  # the server may be the thing that failed
        pass
