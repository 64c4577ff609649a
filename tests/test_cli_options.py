"""The command line means what it says: options in either position, early errors, clean stops."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port

from splitfed import registry
from splitfed.cli import build_parser


def _subparsers(parser) -> dict:
    return parser._subparsers._group_actions[0].choices


def _sample(action) -> list[str]:
    """Arguments that set ``action`` to a value other than its default."""
    if action.nargs == 0:  # store_true
        return [action.option_strings[0]]
    value = {int: "7", float: "2.5", Path: "/tmp/somewhere"}.get(action.type, "tcp://127.0.0.1:45678")
    return [action.option_strings[0], value]


def _value(action) -> object:
    if action.nargs == 0:
        return True
    return {int: 7, float: 2.5, Path: Path("/tmp/somewhere")}.get(action.type, "tcp://127.0.0.1:45678")


@pytest.mark.parametrize("protocol", registry.available())
def test_server_options_mean_the_same_before_and_after_the_protocol(protocol: str) -> None:
    parser = build_parser()
    server = _subparsers(parser)["server"]
    options = [a for a in server._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} >= {"address", "out", "quiet", "threads", "config", "resume"}
    defaults = parser.parse_args(["server", protocol])
    for action in options:
        before = parser.parse_args(["server", *_sample(action), protocol])
        after = parser.parse_args(["server", protocol, *_sample(action)])
        assert getattr(before, action.dest) == getattr(after, action.dest) == _value(action), action.dest
        assert getattr(defaults, action.dest) == action.default, action.dest  # absent: the parent's default
        # setting one option never resets another to a default of the sub-parser
        both = parser.parse_args(["server", *_sample(action), protocol, "--epochs", "3"])
        assert getattr(both, action.dest) == _value(action) and both.epochs == 3


def test_server_listens_where_asked_when_options_come_first(splitfed_cmd, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "run"
    server = subprocess.Popen(
        [*splitfed_cmd, "server", "--address", address, "--quiet", "--out", str(out), "sflv1"]
        + ["--clients", "1", "--epochs", "1", "--join-timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = subprocess.run(
            [*splitfed_cmd, "client", "--server", address, "--name", "c", "--shard", "auto", "--join-timeout", "60"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        stdout, stderr = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, stderr
    assert stdout.strip().splitlines()[-1] == str(out / "summary.json")  # --out given before PROTOCOL was used
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_sigterm_stops_a_waiting_server_cleanly_with_a_summary(splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "run"
    server = subprocess.Popen(
        [*splitfed_cmd, "server", "sflv1", "--address", f"tcp://127.0.0.1:{free_port()}", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").exists():  # written once the server is up
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_done"] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sflv1", "--data", "/nonexistent"], "not found"),
        (["sflv1", "--partition", "foo"], "--partition 'foo'"),
        (["sflv1", "--cut", "9"], "--cut 9 is out of range"),
        (["sflv1", "--partition", "subject"], "needs a person id"),
        (["fedsl", "--clients", "3"], "not a multiple of --segments"),
        (["pyvertical", "--overlap", "1.5"], "--overlap must be in (0, 1]"),
        (["pyvertical", "--clients", "9"], "use fewer clients"),
    ],
)
def test_bad_settings_fail_before_any_process_starts(splitfed_cmd, tmp_path: Path, args: list[str], says: str) -> None:
    out = tmp_path / "run"
    res = subprocess.run([*splitfed_cmd, "run", *args, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], res.stderr
    assert not out.exists()  # no run folder left behind, so no process was started


def test_a_used_run_folder_is_refused_unless_resumed(splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "used"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"round": 1}\n')  # what an earlier run left
    before = (out / "metrics.jsonl").read_text()
    res = subprocess.run(
        [*splitfed_cmd, "run", "sflv1", "--epochs", "1", "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "--resume" in res.stderr and "not empty" in res.stderr, res.stderr
    assert (out / "metrics.jsonl").read_text() == before
    server = subprocess.run(
        [*splitfed_cmd, "server", "sflv1", "--out", str(out), "--address", f"tcp://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert server.returncode == 1 and "already holds a run" in server.stderr, server.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["server", "sflv1", "--address", "memory://x"], "within one process only"),
        (["client", "--server", "udp://127.0.0.1:5"], "use one of inproc://, ipc://, memory://, tcp://"),
    ],
)
def test_an_address_no_process_can_reach_is_refused(splitfed_cmd, tmp_path: Path, args: list[str], says: str) -> None:
    res = subprocess.run([*splitfed_cmd, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 1 and says in res.stderr, res.stderr
    assert not list(tmp_path.iterdir())  # refused before any run folder was made


def test_a_client_with_a_state_dir_must_be_named(splitfed_cmd, tmp_path: Path) -> None:
    """Its state is found by its name when the run resumes; the default name changes with every start."""
    res = subprocess.run(
        [*splitfed_cmd, "client", "--server", "tcp://127.0.0.1:5", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1 and "--state-dir needs --name" in res.stderr, res.stderr
