"""The client process: join a server, learn the run's configuration, train until told to stop."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from splitfed import __version__, registry
from splitfed.config import RunConfig
from splitfed.devices import resolve_device, set_threads, use_precision
from splitfed.errors import ConfigError
from splitfed.files import atomic_write_bytes
from splitfed.optim import follow_recipe, start_round
from splitfed.peers import Server
from splitfed.protocol import DATA_REPORT, Assignment, ClientRole, DataRequest
from splitfed.timeline import mark
from splitfed.transport.base import ClientTransport
from splitfed.transport.link import ClientLink
from splitfed.transport.schemes import client_transport
from splitfed.transport.security import CurveClient
from splitfed.wire import DEFAULT_MAX_BYTES, RUNTIME_KINDS, Message

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
    state_dir: Path | None = None,
    transport: ClientTransport | None = None,
) -> int:
    """Take part in one run; returns the number of rounds trained.

    ``state_dir`` keeps what this client owns and the server never sees (its optimizer
    state, and a PyVertical owner's head) at every checkpointed round, so that a resumed
    run continues exactly.
    """
    transport = transport or client_transport(
        server, name, max_bytes=DEFAULT_MAX_BYTES, connect_timeout=join_timeout or timeout, curve=curve
    )
    link = ClientLink(transport, timeout=timeout, kinds=RUNTIME_KINDS)  # the protocol's kinds come with welcome
    try:
        log.info("%s: waiting for the server at %s (up to %g s)", name, server, join_timeout or timeout)
        # how long we wait for the server, and whether we bring our own data (a newcomer must)
        hello = Message("hello", meta={"version": __version__, "timeout": timeout, "shard": data.shard})
        welcome = link.request(hello, expect=("welcome",))
        mark("welcomed")
        config = RunConfig.from_dict({**welcome.meta["config"], "device": device, "data": data.source})
        link.timeout, link.max_bytes = config.timeout, config.max_bytes
        transport.connect_timeout = config.timeout  # joined: a server gone for --timeout is lost
        assignment = Assignment(config, int(welcome.meta["index"]), int(welcome.meta["clients"]))
        log.info("%s is client %d of %d in a %s run", name, assignment.index, assignment.clients, config.protocol)
        spec = registry.get(config.protocol)
        set_threads(threads, spec.busy_parties(config.clients))
        link.kinds = RUNTIME_KINDS | spec.messages
        use_precision(resolve_device(device), config.precision)
        role, server = spec.client(assignment, data, resolve_device(device), name), Server(link)
        mark("data loaded")
        ready = Message("ready", meta={**role.describe(), DATA_REPORT: _data_report(data)})
        ack = link.request(ready, expect=("ack",))
        role.setup(server, ack)
        follow_recipe(role, config)
        mark("acked")
        start = int(welcome.meta.get("start_round", 1))
        if start > 1 and not welcome.meta.get("rejoin"):  # a rejoin starts from the global weights in ack
            restore_state(role, state_dir, name, start - 1)
        rnd, train = start - 1, ack.meta.get("train", True)
        while True:
            rnd += 1
            link.round = rnd
            start_round(role, config, rnd)
            if train:
                role.train_round(server, rnd)
            else:  # sampled out of this round (--clients-per-round): wait for its weights, to evaluate with
                weights = link.request(Message("idle"), expect=("ack",))
                role.sync(weights)
                if weights.meta.get("train"):  # drafted in place of a planned client that went (--min-clients)
                    role.train_round(server, rnd)
            if config.val_fraction:  # the validation pass, then the test pass
                role.eval_split = "val"
                link.request(Message("eval_done", meta=role.evaluate(server, rnd) or {}), expect=("ack",))
                role.eval_split = "test"
            answer = link.request(Message("eval_done", meta=role.evaluate(server, rnd) or {}), expect=("ack", "done"))
            if answer.meta.get("checkpoint") and state_dir is not None:
                save_state(role, state_dir, name, rnd)
            if answer.kind == "done":
                return rnd
            train = answer.meta.get("train", True)
    except Exception as exc:
        link.tell(Message("error", meta={"error": f"{type(exc).__name__}: {exc}"}))
        raise
    finally:
        link.close()


def _data_report(data: DataRequest) -> dict[str, Any]:
    """What this client was told about its data on its own command line, for the server's config.json."""
    return {
        "source": data.source,
        "partition": data.partition,
        "test_split": data.test_split,
        "test_fraction": data.test_fraction,
        "shard": data.shard,
    }


def state_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / f"{name}.pt"


def save_state(role: ClientRole, state_dir: Path, name: str, rnd: int) -> None:
    buf = io.BytesIO()
    torch.save({"round": rnd, "state": role.state_dict()}, buf)
    atomic_write_bytes(state_path(state_dir, name), buf.getvalue())


def restore_state(role: ClientRole, state_dir: Path | None, name: str, rnd: int) -> None:
    """Load this client's own state of round ``rnd``, where the resumed run continues."""
    path = state_path(state_dir, name) if state_dir is not None else None
    saved: dict[str, Any] | None = None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)  # our own file, and weights only all the same
    if saved is not None and saved["round"] == rnd:
        role.load_state_dict(saved["state"])
        log.info("%s restored its own state of round %d from %s", name, rnd, path)
        return
    found = f"{path} holds round {saved['round']}" if saved is not None else f"no state in {state_dir}"
    if role.state_required:
        raise ConfigError(
            f"{name} cannot resume after round {rnd}: {found}; this protocol keeps part of the model here"
        )
    log.warning("%s resumes without its own state of round %d (%s): its optimizer restarts", name, rnd, found)
