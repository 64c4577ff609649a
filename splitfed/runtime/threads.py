"""Run a whole protocol inside one process: server and clients in threads.

``splitfed.run(..., in_process=True)`` runs on it, for quick experiments, and so do the
equivalence tests (through :mod:`splitfed.testing`).

The parties talk through the in-process ``memory://`` transport (or ZeroMQ's
``inproc://``), and every message is encoded and decoded, so the same code paths as a
multi-process run are exercised. The fuzzing strangers are in :mod:`splitfed.fuzzing`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitfed.config import RunConfig
from splitfed.errors import ConfigError
from splitfed.protocol import DataRequest
from splitfed.runtime.client import run_client
from splitfed.runtime.server import serve
from splitfed.transport.base import ServerTransport
from splitfed.transport.schemes import one_process_schemes, server_transport


def run_in_threads(
    config: RunConfig,
    out: Path,
    data: DataRequest | None = None,
    timeout: float | None = 120.0,
    *,
    resume: bool = False,
    progress: bool = False,
    wrap_server: Callable[[ServerTransport], ServerTransport] | None = None,
    transport: str = "memory",
) -> Path:
    """Run ``config`` with one thread per party; re-raise the first party's failure.

    Clients keep their own state in ``out/clients``, as in ``splitfed run``. ``wrap_server``
    wraps the server's transport (a test that drops or delays messages). ``transport``:
    ``memory`` (the in-process double) or ``inproc`` (ZeroMQ between threads).
    """
    if transport not in one_process_schemes():
        raise ConfigError(f"transport {transport!r}: a run in threads uses one of {', '.join(one_process_schemes())}")
    address = f"{transport}://splitfed-{uuid.uuid4().hex}"
    data = data or DataRequest(
        source=config.data,
        partition=config.partition,
        test_split=config.test_split,
        test_fraction=config.test_fraction,
        seed=config.seed,
        shard="auto",
    )
    errors: list[BaseException] = []
    result: dict[str, Any] = {}
    ready = threading.Event()

    def server() -> None:
        try:
            ready.set()
            bound = server_transport(address, max_bytes=config.max_bytes, send_timeout=config.timeout)
            if wrap_server is not None:
                bound = wrap_server(bound)
            # every party shares this process: one torch thread, as the clients (SFLv1 still steps its copies
            # side by side, one worker per core)
            one = config.replace(threads=config.threads or 1)
            result["summary"] = serve(one, address, out, progress=progress, resume=resume, transport=bound)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)

    def client(i: int) -> None:
        try:
            run_client(
                address,
                f"client-{i}",
                data,
                device=config.device,
                timeout=config.timeout,
                threads=1,
                state_dir=out / "clients",
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=server, daemon=True)]
    threads[0].start()
    ready.wait()
    from splitfed import registry

    n_clients = config.clients if registry.get(config.protocol).distributed else 0
    threads += [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout)  # None: as long as the run takes (each party still gives up on a silent peer)
        if t.is_alive():
            raise TimeoutError(f"a party of the in-process run did not finish within {timeout} s")
    if errors:
        raise errors[0]
    return result["summary"]
