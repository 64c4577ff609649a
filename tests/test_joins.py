"""Members that arrive late, go while loading, or go between a round's plan and its start (threads, memory://).

Each test runs a real server and real clients in threads of this process over the in-process
transport, which encodes and decodes every message; clients are started and lost at round
boundaries (read from metrics.jsonl), never after a fixed delay.
"""

from __future__ import annotations

import json
import logging
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from splitfed.config import RunConfig
from splitfed.errors import RemoteError
from splitfed.protocol import DataRequest
from splitfed.runtime.client import run_client
from splitfed.runtime.membership import sample
from splitfed.runtime.server import serve
from splitfed.transport.base import ClientTransport, Frames
from splitfed.transport.link import ClientLink
from splitfed.transport.schemes import client_transport, server_transport
from splitfed.wire import RUNTIME_KINDS, Message

WAIT = 300.0  # a broken test fails after this instead of hanging


class Party:
    """A server and clients in threads; each party's outcome (its return value or its error) by name."""

    def __init__(self, config: RunConfig, out: Path) -> None:
        self.config, self.out = config, out
        self.address = f"memory://splitfed-{uuid.uuid4().hex}"
        self.outcome: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []
        bound = server_transport(self.address, max_bytes=config.max_bytes, send_timeout=config.timeout)
        self._start(
            "server", lambda: serve(config.replace(threads=1), self.address, out, progress=False, transport=bound)
        )

    def client(self, name: str, data: DataRequest | None = None, transport: ClientTransport | None = None) -> None:
        cfg = self.config
        data = data or DataRequest(source=cfg.data, seed=cfg.seed, shard="auto")
        self._start(
            name, lambda: run_client(self.address, name, data, timeout=cfg.timeout, threads=1, transport=transport)
        )

    def _start(self, name: str, work: Any) -> None:
        def body() -> None:
            try:
                self.outcome[name] = work()
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                self.outcome[name] = exc

        self.threads.append(threading.Thread(target=body, name=name, daemon=True))
        self.threads[-1].start()

    def rows(self) -> list[dict[str, Any]]:
        path = self.out / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def after_round(self, rnd: int) -> None:
        """Return once round ``rnd`` is recorded."""
        limit = time.monotonic() + WAIT
        while len(self.rows()) < rnd:
            assert time.monotonic() < limit, f"round {rnd} was not recorded within {WAIT:g} s"
            time.sleep(0.05)

    def finish(self) -> dict[str, Any]:
        for t in self.threads:
            t.join(WAIT)
            assert not t.is_alive(), f"{t.name} did not finish within {WAIT:g} s"
        return json.loads((self.out / "summary.json").read_text())


def _members(party: Party, n: int) -> None:
    for i in range(n):
        party.client(f"client-{i}")


def test_a_newcomer_with_its_own_data_joins_at_the_next_round(tmp_path: Path) -> None:
    """A client with a new name that arrives after the start joins at the next round boundary, with the
    global weights, and trains from then on; members keep their shards."""
    config = RunConfig(protocol="sflv1", clients=2, epochs=4, min_clients=1, timeout=30)
    party = Party(config, tmp_path / "run")
    _members(party, 2)
    party.after_round(1)
    party.client("newcomer", DataRequest(source="digits", shard="all"))  # it brings its own data
    summary = party.finish()
    rows = party.rows()
    assert summary["status"] == "completed" and summary["rounds_done"] == 4
    joined = next(r["round"] for r in rows if r.get("joined") == ["newcomer"])
    assert joined >= 2
    for row in rows:  # every member trains every round: the newcomer from the round it joined at
        expected = ["client-0", "client-1"] + (["newcomer"] if row["round"] >= joined else [])
        assert row["participants"] == expected
    assert party.outcome["newcomer"] == 4 and party.outcome["client-0"] == 4  # both ran to the last round
    assert summary["test_accuracy"] > 0.6


OTHER_DATA = """
import torch

def three_classes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60, 1, 8, 8, generator=g)
    return x, torch.arange(60) % 3
"""


def test_a_newcomer_whose_data_does_not_match_is_refused_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text(textwrap.dedent(OTHER_DATA))
    config = RunConfig(protocol="fedavg", clients=2, epochs=4, min_clients=1, timeout=30)
    party = Party(config, tmp_path / "run")
    _members(party, 2)
    party.after_round(1)
    party.client("stranger", DataRequest(source=f"{tmp_path / 'other.py'}:three_classes", shard="all"))
    summary = party.finish()
    assert summary["status"] == "completed" and summary["rounds_done"] == 4
    refusal = party.outcome["stranger"]
    assert isinstance(refusal, RemoteError)
    assert "classes ['0', '1', '2']" in str(refusal) and "this run's classes" in str(refusal)
    assert all("stranger" not in r["participants"] and "joined" not in r for r in party.rows())


def test_a_newcomer_on_a_shard_of_the_shared_data_is_refused(tmp_path: Path) -> None:
    """Under `splitfed run` the shared dataset's shards all belong to the members: --shard auto cannot join."""
    config = RunConfig(protocol="fedavg", clients=2, epochs=4, min_clients=1, timeout=30)
    party = Party(config, tmp_path / "run")
    _members(party, 2)
    party.after_round(1)
    party.client("extra", DataRequest(source="digits", shard="auto"))
    summary = party.finish()
    assert summary["status"] == "completed"
    assert isinstance(party.outcome["extra"], RemoteError) and "--shard all" in str(party.outcome["extra"])


def test_a_joiner_lost_while_loading_its_data_does_not_end_the_run(tmp_path: Path) -> None:
    """--clients-per-round without --min-clients: a late joiner that goes before ``ready`` is left out."""
    config = RunConfig(protocol="sflv2", clients=3, epochs=4, clients_per_round=2, timeout=30, join_timeout=20)
    party = Party(config, tmp_path / "run")
    _members(party, 3)
    party.after_round(1)
    link = ClientLink(client_transport(party.address, "late", max_bytes=1 << 20, connect_timeout=30), timeout=30)
    link.kinds = RUNTIME_KINDS
    welcome = link.request(Message("hello", meta={"version": _version(), "timeout": 30, "shard": "all"}))
    assert welcome.kind == "welcome"
    link.close()  # gone before ready
    summary = party.finish()
    assert summary["status"] == "completed" and summary["rounds_done"] == 4
    lost = [r for r in party.rows() if "lost" in r]
    assert [r["lost"] for r in lost] == [["late"]] and all("late" not in r["participants"] for r in party.rows())


def _version() -> str:
    from splitfed import __version__

    return __version__


class Dies(ClientTransport):
    """Wraps a client's transport: the process dies as it sends round ``rnd``'s ``kind`` (after it, or before)."""

    def __init__(self, inner: ClientTransport, kind: str, rnd: int, *, before: bool = False) -> None:
        self.inner, self.kind, self.rnd, self.before = inner, kind, rnd, before
        self.address, self.name = inner.address, inner.name

    def send(self, frames: Frames, *, block: bool = True) -> bool:
        head = json.loads(bytes(frames[0]))
        last = head.get("kind") == self.kind and head.get("round") == self.rnd
        if last and self.before:
            self.inner.close()
        sent = self.inner.send(frames, block=block)
        if last:
            self.inner.close()
        return sent

    def recv(self, timeout: float) -> list[Any] | None:
        return self.inner.recv(timeout)

    def close(self) -> None:
        self.inner.close()


def test_a_planned_client_lost_before_its_round_starts_is_replaced_to_keep_min_clients(tmp_path: Path) -> None:
    """Round 3's plan picks two of three clients; one of them dies as round 2's answers go out. The round
    starts with --min-clients 2 all the same: a member that was to sit out trains in its place."""
    config = RunConfig(protocol="sflv1", clients=3, epochs=4, clients_per_round=2, min_clients=2, timeout=30)
    members = [f"client-{i}" for i in range(3)]
    victim = sample(members, 2, seed=config.seed, rnd=3)[0]
    party = Party(config, tmp_path / "run")
    for name in members:
        inner = client_transport(party.address, name, max_bytes=config.max_bytes, connect_timeout=30)
        party.client(name, transport=Dies(inner, "eval_done", 2) if name == victim else inner)
    summary = party.finish()
    rows = party.rows()
    assert summary["status"] == "completed" and summary["rounds_done"] == 4
    assert rows[2]["lost"] == [victim]
    assert rows[2]["participants"] == [p for p in members if p != victim]  # the one left, and one drafted in
    assert rows[3]["participants"] == [p for p in members if p != victim]
    assert "below_min_clients" not in rows[2]


def test_sl_goes_on_when_the_client_whose_turn_is_next_goes_before_asking_for_it(tmp_path: Path) -> None:
    """SL: client-0, first in round 2's order, dies before it asks for its turn; the others wait for theirs.
    Its turn is skipped and the next client's begins."""
    config = RunConfig(protocol="sl", clients=3, epochs=3, min_clients=2, timeout=5)
    party = Party(config, tmp_path / "run")
    for i in range(3):
        inner = client_transport(party.address, f"client-{i}", max_bytes=config.max_bytes, connect_timeout=30)
        party.client(f"client-{i}", transport=Dies(inner, "turn", 2, before=True) if i == 0 else inner)
    summary = party.finish()
    rows = party.rows()
    assert summary["status"] == "completed" and summary["rounds_done"] == 3, summary.get("error")
    assert rows[1]["lost"] == ["client-0"] and rows[2]["participants"] == ["client-1", "client-2"]


def test_a_member_lost_while_a_joiner_loads_its_data_is_dropped_and_the_run_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the server waits for a joiner's ``ready`` at a boundary, the members wait for their answers and get
    keep-alives; client-1's connection goes then (a keep-alive to it fails). It is dropped by the run's rules
    (--min-clients 1), the joiner that never says ready is left out, and client-0 trains on."""
    caplog.set_level(logging.WARNING, logger="splitfed.runtime.membership")
    config = RunConfig(protocol="fedavg", clients=2, epochs=4, min_clients=1, timeout=8, join_timeout=30)
    party = Party(config, tmp_path / "run")
    member = client_transport(party.address, "client-1", max_bytes=config.max_bytes, connect_timeout=30)
    party.client("client-0")
    party.client("client-1", transport=member)
    party.after_round(1)
    link = ClientLink(client_transport(party.address, "late", max_bytes=1 << 20, connect_timeout=30), timeout=30)
    link.kinds = RUNTIME_KINDS
    assert link.request(Message("hello", meta={"version": _version(), "timeout": 30, "shard": "all"})).kind == "welcome"
    member.close()  # client-1 goes while the server waits for late's ready
    limit = time.monotonic() + WAIT
    while not any("client-1" in r.getMessage() and "no longer a member" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < limit, "client-1's loss was never noticed"
        time.sleep(0.05)
    link.close()  # and late goes before it is ready
    summary = party.finish()
    assert summary["status"] == "completed" and summary["rounds_done"] == 4, summary.get("error")
    lost = [name for r in party.rows() for name in r.get("lost", [])]
    assert sorted(lost) == ["client-1", "late"]
    assert party.rows()[-1]["participants"] == ["client-0"]
