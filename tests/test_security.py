"""CurveZMQ: the bytes on the wire are encrypted, and the wrong keys cannot join."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port

from splitfed.config import RunConfig
from splitfed.errors import PeerLostError
from splitfed.protocol import DataRequest
from splitfed.runtime.client import run_client
from splitfed.runtime.server import serve
from splitfed.transport.security import CurveClient, CurveServer, create_keys


class Relay:
    """A TCP relay on loopback that keeps a copy of every byte that passes, both ways."""

    def __init__(self, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target, self.seen = target_port, bytearray()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            try:
                outbound = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server is not up yet: drop this try, ZeroMQ reconnects
                inbound.close()
                continue
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)


def run_through_relay(tmp_path: Path, encrypted: bool) -> tuple[bytes, dict]:
    server_port = free_port()
    relay = Relay(server_port)
    public, secret = create_keys(tmp_path / "keys", "server")
    config = RunConfig(protocol="sflv1", clients=1, epochs=1, seed=0, timeout=30)
    errors: list[BaseException] = []

    def server() -> None:
        try:
            serve(
                config,
                f"tcp://127.0.0.1:{server_port}",
                tmp_path / "run",
                progress=False,
                curve=CurveServer(secret) if encrypted else None,
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=server, daemon=True)
    t.start()
    wait_listening(server_port)
    run_client(
        f"tcp://127.0.0.1:{relay.port}",
        "client-0",
        DataRequest(shard="auto"),
        timeout=30,
        threads=1,
        curve=CurveClient(public) if encrypted else None,
    )
    t.join(30)
    relay.close()
    assert not errors, errors
    return bytes(relay.seen), json.loads((tmp_path / "run" / "summary.json").read_text())


def test_encrypted_wire_shows_no_plain_text(tmp_path: Path) -> None:
    plain, plain_summary = run_through_relay(tmp_path / "plain", encrypted=False)
    secret, secret_summary = run_through_relay(tmp_path / "curve", encrypted=True)
    assert b'"kind":"forward"' in plain  # the control: without CURVE the JSON headers are readable
    assert b'"kind"' not in secret and b"forward" not in secret and b"client-0" not in secret
    assert len(secret) > 0.9 * len(plain)  # the same traffic went through, encrypted
    assert secret_summary["test_accuracy"] == plain_summary["test_accuracy"]


def test_wrong_or_missing_server_key_cannot_join(tmp_path: Path) -> None:
    _, secret = create_keys(tmp_path / "real", "server")
    impostor, _ = create_keys(tmp_path / "other", "server")
    port = free_port()
    config = RunConfig(protocol="sflv1", clients=1, epochs=1, timeout=4, join_timeout=4)
    outcome: list[BaseException] = []

    def server() -> None:
        try:
            serve(config, f"tcp://127.0.0.1:{port}", tmp_path / "run", progress=False, curve=CurveServer(secret))
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    t = threading.Thread(target=server, daemon=True)
    t.start()
    for curve in (CurveClient(impostor), None):  # a wrong server key, then no encryption at all
        with pytest.raises(PeerLostError, match="not reachable|no answer"):
            run_client(
                f"tcp://127.0.0.1:{port}", "client-0", DataRequest(shard="auto"), timeout=2, threads=1, curve=curve
            )
    t.join(30)
    assert outcome and isinstance(outcome[0], PeerLostError)  # nobody ever joined the server


def test_allow_list_admits_only_listed_clients(splitfed_cmd, start_server, tmp_path: Path) -> None:
    server_pub, server_secret = create_keys(tmp_path / "server", "server")
    allowed_pub, allowed_secret = create_keys(tmp_path / "alice", "alice")
    _, stranger_secret = create_keys(tmp_path / "mallory", "mallory")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "alice.key").write_bytes(allowed_pub.read_bytes())
    server, address, _ = start_server(
        "--curve-secret", str(server_secret), "--curve-clients", str(tmp_path / "allowed"), "--timeout", "60"
    )
    client = [*splitfed_cmd, "client", "--server", address, "--shard", "auto", "--server-key", str(server_pub)]
    stranger = subprocess.run(
        [
            *client,
            "--name",
            "mallory",
            "--curve-secret",
            str(stranger_secret),
            "--timeout",
            "3",
            "--join-timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stranger.returncode != 0 and "lost server" in stranger.stderr
    alice = subprocess.run(
        [*client, "--name", "alice", "--curve-secret", str(allowed_secret), "--timeout", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert alice.returncode == 0, alice.stderr
    server.wait(60)
    assert server.returncode == 0, server.stderr.read()


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x.sock", True),
        ("inproc://x", True),
        ("memory://x", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://10.0.0.5:5555", False),
        ("tcp://no-such-host.invalid:5555", False),
        ("tcp://127.0.0.1.nip.io:5555", False),  # a name that resolves to loopback today may not tomorrow
    ],
)
def test_which_addresses_count_as_this_machine_only(address: str, local: bool) -> None:
    from splitfed.transport.security import is_local

    assert is_local(address) is local


def _cli(splitfed_cmd, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*splitfed_cmd, *args], capture_output=True, text=True, timeout=timeout)


def test_a_reachable_server_without_keys_refuses_to_start(splitfed_cmd, tmp_path: Path) -> None:
    res = _cli(
        splitfed_cmd, "server", "sflv1", "--address", f"tcp://0.0.0.0:{free_port()}", "--out", str(tmp_path / "r")
    )
    assert res.returncode == 1, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "splitfed keys DIR --clients" in line and "--insecure" in line and "--curve-clients" in line, line
    assert not (tmp_path / "r").exists()
    _, secret = create_keys(tmp_path / "k", "server")  # a key alone is not enough: anyone could still join
    res = _cli(splitfed_cmd, "server", "sflv1", "--address", "tcp://0.0.0.0:5555", "--curve-secret", str(secret))
    assert res.returncode == 1 and "--curve-clients (an allow-list)" in res.stderr, res.stderr


def test_insecure_starts_with_a_warning_that_names_what_is_exposed(splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "run"
    server = subprocess.Popen(
        [*splitfed_cmd, "server", "sflv1", "--address", f"tcp://0.0.0.0:{free_port()}", "--insecure"]
        + ["--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").exists():
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
            time.sleep(0.1)
        server.terminate()
        _, err = server.communicate(timeout=30)
    finally:
        server.kill()
    first = err.strip().splitlines()[0]
    assert first.startswith("warning: --insecure") and "plain text" in first and "any client" in first, err


def test_a_client_refuses_an_unkeyed_remote_server(splitfed_cmd) -> None:
    res = _cli(splitfed_cmd, "client", "--server", "tcp://192.0.2.1:5555", "--name", "a", "--join-timeout", "60")
    assert res.returncode == 1, res.stderr
    assert "--server-key" in res.stderr and "--insecure" in res.stderr and "Traceback" not in res.stderr


def test_a_world_readable_secret_key_is_refused(splitfed_cmd, tmp_path: Path) -> None:
    _, secret = create_keys(tmp_path / "k", "server")
    secret.chmod(0o644)
    res = _cli(
        splitfed_cmd, "server", "sflv1", "--address", f"tcp://127.0.0.1:{free_port()}", "--curve-secret", str(secret)
    )
    assert res.returncode == 1 and f"chmod 600 {secret}" in res.stderr, res.stderr


def test_keys_in_one_step_run_a_federation_with_names_bound_to_keys(splitfed_cmd, tmp_path: Path) -> None:
    """The printed commands, run as printed (host, port, protocol and data filled in), train; a member
    that claims another member's name is refused."""
    keys = _cli(splitfed_cmd, "keys", str(tmp_path / "keys"), "--clients", "hospital-a,hospital-b")
    assert keys.returncode == 0, keys.stderr
    for secret in (tmp_path / "keys").rglob("*.key_secret"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    port = free_port()
    commands = [line.strip().split() for line in keys.stdout.splitlines() if line.startswith("  splitfed ")]
    assert len(commands) == 3

    def filled(cmd: list[str], extra: list[str]) -> list[str]:
        cmd = [w.replace("SERVER_HOST", "127.0.0.1").replace("5555", str(port)) for w in cmd if w != "..."]
        return [*splitfed_cmd, *cmd[1:], *extra]

    server_cmd = [w if w != "PROTOCOL" else "sflv1" for w in commands[0]]
    server = subprocess.Popen(
        filled(server_cmd, ["--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    a_cmd, b_cmd = (filled(c, ["digits", "--shard", "auto", "--timeout", "60"]) for c in commands[1:])
    try:
        impostor = [w if w != "hospital-a" else "hospital-b" for w in a_cmd]  # a's key, b's name
        refused = subprocess.run(impostor, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "listed as 'hospital-a'" in refused.stderr, refused.stderr
        members = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in (a_cmd, b_cmd)
        ]
        for m in members:
            _, err = m.communicate(timeout=120)
            assert m.returncode == 0, err
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and set(summary["bytes_by_client"]) == {"hospital-a", "hospital-b"}
