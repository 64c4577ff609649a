"""``splitfed run``: one server and N client processes on this machine, watched until done.

The parties are real OS processes running the same ``splitfed server`` and
``splitfed client`` commands a multi-machine user runs by hand. They are forked from one
preloading process (:mod:`splitfed.runtime.zygote`), so torch is imported once, not once
per party, and its pages are shared; the launcher itself imports no torch. The launcher
waits for them and propagates the first failure: every process is stopped, and the error
names the party, its exit status and the tail of its log.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from splitfed.config import RunConfig
from splitfed.errors import PartyFailedError, SplitFedError, Terminated
from splitfed.runtime import zygote
from splitfed.runtime.outputs import RunWriter
from splitfed.timeline import mark

log = logging.getLogger(__name__)

POLL = 0.1
GRACE = 10.0
#: how long a client's reported error waits for the server's fuller account of it
SERVER_EXPLAINS = 5.0


@dataclass
class Party:
    name: str
    proc: subprocess.Popen | zygote.Forked
    log_path: Path
    started: float = field(default_factory=time.time)  # wall clock, to compare with file times

    def describe_exit(self) -> str:
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            try:
                how = f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"was killed by signal {-rc}"
        else:
            how = f"exited with status {rc}"
        return f"{self.name} (pid {self.proc.pid}) {how}{_log_tail(self.log_path)}"


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return f"; last lines of {path}:\n    " + "\n    ".join(text) if text else f" (log: {path})"


def free_tcp_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def make_address(transport: str) -> str:
    if transport == "tcp":
        return free_tcp_address()
    path = Path(tempfile.mkdtemp(prefix="splitfed-")) / "server.sock"
    return f"ipc://{path}"


def launch(
    config: RunConfig,
    out: Path,
    *,
    transport: str = "tcp",
    quiet: bool = False,
    encrypt: bool = False,
    resume: bool = False,
    distributed: bool = True,
    timeout: float | None = None,
) -> Path:
    """Run a whole local run, checked already (:func:`splitfed.api.prepare`); return the path of summary.json.

    Raises PartyFailedError. With ``encrypt``, a fresh CURVE key pair for the server is written
    to ``out/keys`` and every connection is encrypted, as between machines. With ``resume``, the
    server continues the run in ``out`` from its checkpoint. ``distributed``: whether the protocol
    has client processes (centralized has none). ``timeout``: seconds before the run is stopped
    and reported as failed (None: no limit).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    RunWriter(out).write_config(config.to_dict())
    address = make_address(transport)
    threads = config.threads  # 0: each process shares the cores among the parties busy at once (devices.set_threads)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server_curve: list[str] = []
    client_curve: list[str] = []
    if encrypt:
        from splitfed.transport.security import create_keys  # imports torch (through the transport package)

        public, secret = create_keys(out / "keys", "server")
        server_curve, client_curve = ["--curve-secret", str(secret)], ["--server-key", str(public)]
    server_args = [
        "server",
        "--config",
        str(out / "config.json"),
        "--address",
        address,
        "--out",
        str(out),
        "--threads",
        str(threads),
        *server_curve,
        *(["--quiet"] if quiet else []),
        *(["--resume"] if resume else []),
    ]
    starter = _Starter(out, env)
    clients = [_client_args(config, address, out, f"client-{i}", client_curve) for i in range(config.clients)]
    parties: list[Party] = []
    try:  # a signal or error while the parties start stops those already started, as one while they run
        parties.append(starter.start("server", server_args, inherit_stderr=True))
        for args in clients if distributed else []:
            parties.append(starter.start(args[args.index("--name") + 1], args))
        mark("parties spawned")
        _watch(parties, out, spare_clients=config.min_clients > 0, timeout=timeout)
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reached every party already; give the server time to write its summary.
        _stop(parties, first=signal.SIGINT, settle=GRACE)
        raise
    except Terminated:
        # SIGTERM reached this launcher alone: pass it on, so every party stops cleanly too.
        _stop(parties, first=signal.SIGTERM)
        raise
    except BaseException:  # a party could not start (the zygote died, say): stop those that did
        _stop(parties)
        raise
    _record_peak_memory(out / "summary.json", starter.peak_kb())
    return out / "summary.json"


def _client_args(config: RunConfig, address: str, out: Path, name: str, curve: list[str]) -> list[str]:
    """The ``splitfed client`` command line of client ``name`` of a local run."""
    return [
        "client",
        "--server",
        address,
        "--name",
        name,
        "--data",
        config.data,
        "--partition",
        config.partition,
        "--test-split",
        config.test_split,
        "--test-fraction",
        str(config.test_fraction),
        "--data-seed",
        str(config.seed),
        "--shard",
        "auto",
        "--device",
        config.device,
        "--timeout",
        str(config.timeout),
        "--join-timeout",
        str(config.join_timeout),
        "--threads",
        str(config.threads),
        "--state-dir",
        str(out / "clients"),
        *curve,
    ]


def _record_peak_memory(summary_path: Path, peak_kb: int) -> None:
    """Add the peak resident memory of the largest party (all have exited), in KiB, to summary.json."""
    import json

    from splitfed.files import atomic_write_json

    summary = json.loads(summary_path.read_text())
    summary["peak_memory_mb"] = round(peak_kb / 1024, 1)
    atomic_write_json(summary_path, summary)


class _Starter:
    """Starts the parties of one run: forked from the zygote, or (``SPLITFED_NO_ZYGOTE=1``) as new processes."""

    def __init__(self, out: Path, env: dict[str, str]) -> None:
        self.out, self.env = out, env
        self.forked = zygote.use_zygote()
        self.started: list[Party] = []

    def start(self, name: str, args: list[str], inherit_stderr: bool = False) -> Party:
        """Start ``splitfed ARGS``; its output goes to RUN/logs/NAME.log (the server's progress to our stderr)."""
        log_path = self.out / "logs" / f"{name}.log"
        env = {**self.env, "SPLITFED_LOG_FILE": str(log_path)} if inherit_stderr else self.env
        if self.forked:
            stdout, stderr = (os.devnull, None) if inherit_stderr else (str(log_path), str(log_path))
            proc = zygote.fork(zygote.run_party, args, env, os.getcwd(), stdout, stderr, name=name)
            self.started.append(party := Party(name, proc, log_path))
            return party
        with open(log_path, "ab") as fh:
            cmd = [sys.executable, "-m", "splitfed", *args]
            if inherit_stderr:  # the server's progress goes to our terminal, its log lines to the file
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
            else:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        return Party(name, proc, log_path)

    def peak_kb(self) -> int:
        """The peak resident memory of the largest party, in KiB (every party has exited)."""
        if not self.forked:
            import resource

            return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: the largest child
        return max([0] + [p.proc.peak_kb for p in self.started])  # the zygote reports each with its exit


def _watch(parties: list[Party], out: Path, spare_clients: bool = False, timeout: float | None = None) -> None:
    """Wait for every party; the first failure stops them all. With ``spare_clients`` (--min-clients)
    a client that fails is only reported: the server drops it and goes on while enough remain.
    After ``timeout`` seconds every party is stopped and the run fails."""
    server = parties[0]
    deadline = None if timeout is None else time.monotonic() + timeout
    server_done_at: float | None = None
    lost: set[str] = set()
    while True:
        failing = [p for p in parties if p.proc.poll() not in (None, 0) and p.name not in lost]
        # a party killed by a signal is the cause of whatever failed with it (a server that then lost that
        # client, say), whichever exit was seen first
        for p in sorted(failing, key=lambda p: (p.proc.returncode >= 0, parties.index(p))):
            if not spare_clients or p is server:
                raise _failure(parties, p, out)
            lost.add(p.name)
            log.warning("%s; the run goes on without it", p.describe_exit().split(";")[0])
        if all(p.proc.returncode == 0 or p.name in lost for p in parties):
            return
        if server.proc.returncode == 0:
            server_done_at = server_done_at or time.monotonic()
            if time.monotonic() - server_done_at > GRACE:
                stuck = [p for p in parties if p.proc.returncode is None]
                _stop(stuck)
                raise PartyFailedError(stuck[0].name, f"still running {GRACE:g} s after the server finished")
        if deadline is not None and time.monotonic() > deadline:
            _stop(parties)
            raise SplitFedError(f"timed out after {timeout:g} s")
        time.sleep(POLL)


def _failure(parties: list[Party], failed: Party, out: Path) -> SplitFedError:
    """Stop the others and say what went wrong, once.

    A client that reported an error (exit status 1) has told the server why; the server
    then fails too and writes the full story (which party, which round, what to do) into
    summary.json, which is the one message shown. A party killed by a signal, or a server
    with nothing to add, is described by its exit and the tail of its log.
    """
    server = parties[0]
    if failed is not server and failed.proc.returncode == 1:
        try:
            server.proc.wait(timeout=SERVER_EXPLAINS)
        except subprocess.TimeoutExpired:
            pass
    _stop([q for q in parties if q is not failed])
    killed = failed.proc.returncode < 0  # the cause: what the server wrote is its consequence ("lost client-1")
    error = _summary_error(out, server.started) if server.proc.returncode not in (None, 0) and not killed else None
    return SplitFedError(error) if error else PartyFailedError(failed.name, failed.describe_exit())


def _summary_error(out: Path, since: float) -> str | None:
    """The error the server wrote into summary.json, if it wrote one in this launch (not a resumed run's old one)."""
    import json

    path = out / "summary.json"
    try:
        if path.stat().st_mtime < since:
            return None
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    error = summary.get("error") if summary.get("status") == "failed" else None
    return error.split(": ", 1)[1] if error and ": " in error else error


def _stop(parties: list[Party], first: signal.Signals = signal.SIGTERM, settle: float = 0.0) -> None:
    """Stop parties: let them ``settle`` on a signal they already got, then ``first``, then SIGKILL.

    A party the zygote has not forked yet cannot have got the signal: it gets ``first`` at once,
    so that it is never forked (:meth:`splitfed.runtime.zygote.Forked.send_signal`)."""
    for p in parties:
        if not getattr(p.proc, "forked", True):
            p.proc.send_signal(first)
    deadline = time.monotonic() + settle
    while settle and time.monotonic() < deadline and any(p.proc.poll() is None for p in parties):
        time.sleep(POLL)
    for p in parties:
        if p.proc.poll() is None:
            p.proc.send_signal(first)
    deadline = time.monotonic() + GRACE
    for p in parties:
        try:
            p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
