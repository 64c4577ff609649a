"""A fault-injection harness: a real server and N real client processes, some killed, frozen and restarted.

Faults follow a seeded schedule keyed to rounds: the harness watches the server's
``metrics.jsonl`` and, when round ``r`` begins (``r - 1`` rows written), strikes the client
scheduled for it with SIGKILL (``kill``) or SIGSTOP (``freeze``). At round ``back`` the struck
process is killed for good (a frozen one included) and a new process with the same name is
started: it rejoins at the next round boundary. Used by the tests of each protocol's loss
semantics and by ``benchmarks/chaos.py``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from splitfed.errors import SplitFedError
from splitfed.runtime.launcher import free_tcp_address

KINDS = ("kill", "freeze")
#: a replacement client: import everything, wait for the go file, then run ``splitfed client ...``
SPARE = """
import sys, time, pathlib
import splitfed.cli, splitfed.runtime.client, splitfed.data.shards, splitfed.protocols.sfl_client
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.05)
sys.exit(splitfed.cli.main(sys.argv[2:]))
"""
POLL = 0.05


@dataclass(frozen=True)
class Fault:
    """Strike ``client`` when round ``round`` begins; start it again when round ``back`` begins."""

    round: int
    client: str
    kind: str
    back: int


def schedule(clients: int, rounds: int, *, share: float, seed: int, down_for: int = 2) -> list[Fault]:
    """Faults in about ``share`` of the rounds (from round 2), each on a client that is up, back ``down_for``
    rounds later; the same ``seed`` gives the same schedule."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    for rnd in range(2, rounds - down_for + 1):
        if rng.random() >= share:
            continue
        down = {f.client for f in faults if f.round <= rnd < f.back}
        up = [f"client-{i}" for i in range(clients) if f"client-{i}" not in down]
        faults.append(Fault(rnd, rng.choice(up), rng.choice(KINDS), rnd + down_for))
    return faults


@dataclass
class Federation:
    """``splitfed server`` and ``splitfed client`` processes on this machine, with their logs in ``out/logs``."""

    command: list[str]  # how to run splitfed, e.g. [sys.executable, "-m", "splitfed"]
    protocol: str
    clients: int
    out: Path
    server_args: list[str] = field(default_factory=list)
    client_timeout: float = 120.0
    events: list[dict] = field(default_factory=list)  # what the harness did, and when (by round)

    def __post_init__(self) -> None:
        self.address = free_tcp_address()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self._spares: dict[int, tuple[subprocess.Popen, Path]] = {}

    def start(self) -> None:
        server = [*self.command, "server", self.protocol, "--clients", str(self.clients), "--address", self.address]
        self.procs["server"] = self._popen("server", [*server, "--out", str(self.out), "--quiet", *self.server_args])
        for i in range(self.clients):
            self.start_client(f"client-{i}")

    def client_command(self, name: str) -> list[str]:
        cmd = [*self.command, "client", "--server", self.address, "--name", name, "--shard", "auto"]
        return [*cmd, "--timeout", str(self.client_timeout)]

    def start_client(self, name: str) -> None:
        self.procs[name] = self._popen(name, self.client_command(name))

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        with open(self.out / "logs" / f"{name}.log", "ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def rounds_done(self) -> int:
        path = self.out / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def run(self, faults: list[Fault], deadline: float = 1800.0) -> int:
        """Start everything, strike and restart by ``faults``, wait for the server; return its exit status."""
        self.start()
        # the replacements start now, with the others: on a loaded machine starting Python and torch can take
        # longer than the rounds a client is down for
        self._spares = {i: self._spare(f.client, i) for i, f in enumerate(faults)}
        strikes = [(f.round, 0, i, f) for i, f in enumerate(faults)]  # (round, restart?, which, fault)
        todo = sorted(strikes + [(f.back, 1, i, f) for i, f in enumerate(faults)])
        limit = time.monotonic() + deadline
        try:
            while self.procs["server"].poll() is None:
                if time.monotonic() > limit:
                    raise SplitFedError(f"the run did not end within {deadline:g} s; logs in {self.out / 'logs'}")
                while todo and self.rounds_done() >= todo[0][0] - 1:
                    _, restart, i, fault = todo.pop(0)
                    self._restart(fault, i) if restart else self._strike(fault)
                time.sleep(POLL)
            return self.procs["server"].returncode
        finally:
            self.stop()

    def _strike(self, fault: Fault) -> None:
        proc = self.procs[fault.client]
        proc.send_signal(signal.SIGKILL if fault.kind == "kill" else signal.SIGSTOP)
        self.events.append({"round": fault.round, "client": fault.client, "did": fault.kind, "pid": proc.pid})

    def _spare(self, name: str, i: int) -> tuple[subprocess.Popen, Path]:
        """A client that will replace ``name``: it imports everything, then waits for its go file."""
        go = self.out / "logs" / f"{name}.go-{i}"
        cmd = self.client_command(name)[len(self.command) :]
        return self._popen(name, [sys.executable, "-c", SPARE, str(go), *cmd]), go

    def _restart(self, fault: Fault, i: int) -> None:
        old = self.procs[fault.client]
        old.kill()  # a frozen process holds its name's connection until it is gone
        old.wait()
        self.procs[fault.client], go = self._spares.pop(i)
        go.touch()
        self.events.append({"round": fault.back, "client": fault.client, "did": "restart"})

    def stop(self) -> None:
        """End every process still running (a frozen one is woken so that it can die)."""
        for proc in [*self.procs.values(), *(spare for spare, _ in self._spares.values())]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()

    def metrics(self) -> list[dict]:
        path = self.out / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())
