"""Faults with real processes: a dead or frozen server, a diverged loss, a join that fails.

Each is reported within the timeout, by every party, as what it is, with the run folder kept.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import free_port


def _wait_for(path: Path, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        dead = [p for p in procs if p.poll() is not None]
        assert not dead, f"a party exited early: {dead[0].args}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.05)


def _server_and_clients(splitfed_cmd, out: Path, timeout: float, clients: int = 2):
    address = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [*splitfed_cmd, "server", "sflv1", "--clients", str(clients), "--epochs", "500", "--timeout", str(timeout)]
        + ["--address", address, "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    members = [
        subprocess.Popen(
            [*splitfed_cmd, "client", "--server", address, "--name", f"client-{i}", "--shard", "auto"]
            + ["--timeout", "120"],  # the server's --timeout is the one that counts once joined
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    return server, members


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
def test_every_client_notices_a_dead_or_frozen_server_within_the_timeout(splitfed_cmd, tmp_path, fault) -> None:
    """Before, a client waited --timeout + --join-timeout (about 11 minutes) for a dead server."""
    timeout = 3.0
    server, members = _server_and_clients(splitfed_cmd, tmp_path / "run", timeout)
    try:
        _wait_for(tmp_path / "run" / "metrics.jsonl", [server, *members])
        server.send_signal(fault)
        struck = time.monotonic()
        results = [m.communicate(timeout=60) for m in members]
        took = time.monotonic() - struck
    finally:
        server.send_signal(signal.SIGCONT)
        for p in (server, *members):
            p.kill()
            p.wait()
    assert took < timeout + 15, f"the clients took {took:.1f} s to notice"  # the bound is generous for loaded CI
    for member, (_, err) in zip(members, results, strict=True):
        assert member.returncode == 1, err
        assert "server at tcp://127.0.0.1" in err and "Traceback" not in err, err


@pytest.mark.parametrize("protocol", ["sflv1", "fedavg"])
def test_a_diverged_loss_is_reported_as_such(run_protocol, splitfed_cmd, tmp_path, protocol) -> None:
    """sflv1: the server computes the loss; fedavg: a client does and reports it."""
    out = tmp_path / f"nan-{protocol}"
    res = subprocess.run(
        [*splitfed_cmd, "run", protocol, "--clients", "2", "--epochs", "3", "--optimizer", "sgd", "--lr", "1e6"]
        + ["--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "diverged in round" in errors[0] and "became nan" in errors[0] and "--lr" in errors[0], errors[0]
    assert "WireError" not in res.stderr and "Traceback" not in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "diverged" in summary["error"]
    if (out / "checkpoint.pt").exists():  # the last good round is kept, and it is finite
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        weights = ckpt.get("model") or ckpt["client_half"]
        assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_a_failed_join_still_writes_a_summary(splitfed_cmd, tmp_path: Path) -> None:
    """One client of two joins; the server gives up on the second and tells the first why.

    The client starts first and the server only once the client waits for it: a client still
    importing torch on a loaded machine when the 3 s join window closed never joined, and was
    (rightly) left with "no answer" instead of the run's failure, which made this test flaky."""
    out = tmp_path / "run"
    address = f"tcp://127.0.0.1:{free_port()}"
    client_log = tmp_path / "client.err"
    with client_log.open("w") as client_err_file:
        client = subprocess.Popen(
            [*splitfed_cmd, "client", "--server", address, "--name", "lonely", "--shard", "auto", "--timeout", "60"],
            stdout=subprocess.DEVNULL,
            stderr=client_err_file,
            text=True,
        )
    server = None
    try:
        deadline = time.monotonic() + 120
        while "waiting for the server" not in client_log.read_text() and time.monotonic() < deadline:
            assert client.poll() is None, client_log.read_text()
            time.sleep(0.1)
        server = subprocess.Popen(
            [*splitfed_cmd, "server", "sflv1", "--clients", "2", "--join-timeout", "3", "--address", address]
            + ["--out", str(out), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = server.communicate(timeout=120)
        client.wait(timeout=60)
        client_err = client_log.read_text()
    finally:
        for process in (server, client):
            if process is not None:
                process.kill()
    assert server.returncode == 1 and "no more within 3 s" in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_done"] == 0 and "joined" in summary["error"]
    assert client.returncode == 1 and "the run failed" in client_err, client_err  # told why, not left waiting


def test_run_files_follow_the_umask(tmp_path: Path) -> None:
    """The atomic writer's files get 0666 less the umask, like any file the user writes."""
    import sys

    code = (
        "import os, sys; from pathlib import Path; from splitfed.files import atomic_write_json; "
        "os.umask(int(sys.argv[2], 8)); atomic_write_json(Path(sys.argv[1]), {'a': 1}); "
        "print(oct(os.stat(sys.argv[1]).st_mode & 0o777))"
    )
    for umask, mode in (("022", "0o644"), ("077", "0o600"), ("002", "0o664")):
        res = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"f{umask}.json"), umask], capture_output=True, text=True
        )
        assert res.stdout.strip() == mode, (umask, res.stdout, res.stderr)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left over


def test_a_client_with_a_shorter_timeout_than_the_server_survives_a_long_join(splitfed_cmd, tmp_path: Path) -> None:
    """Before `welcome` a client waits with its own --timeout. The server's keep-alives came every --timeout/4
    of its own (15 s here), too rarely for a client on --timeout 4 waiting for a second client: the client now
    tells its timeout in `hello`, and its keep-alives come four times within it."""
    address = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [*splitfed_cmd, "server", "sflv1", "--clients", "2", "--epochs", "1", "--timeout", "60", "--address", address]
        + ["--out", str(tmp_path / "run"), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = [*splitfed_cmd, "client", "--server", address, "--shard", "auto", "--timeout", "4"]
    early = subprocess.Popen([*client, "--name", "early"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(10)  # the early client waits for the late one, well past its own 4 s
        assert early.poll() is None, early.communicate()[1]
        late = subprocess.run([*client, "--name", "late"], capture_output=True, text=True, timeout=120)
        _, err = early.communicate(timeout=60)
        server.wait(60)
    finally:
        for p in (server, early):
            p.kill()
            p.wait()
    assert late.returncode == 0, late.stderr
    assert early.returncode == 0, err
    assert server.returncode == 0, server.stderr.read()
