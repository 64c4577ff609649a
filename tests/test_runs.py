"""Real processes, real sockets: what a user sees from `splitfed run`, `server` and `client`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import zmq

from splitfed.timeline import read_marks
from splitfed.wire import Message, decode, encode


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def pids_of(name: str, marks: Path) -> list[int]:
    """The processes of party ``name`` in a run started with ``SPLITFED_TIMELINE=marks`` (forked parties share
    the zygote's command line, so the run's own timeline names them)."""
    return sorted({mark["pid"] for mark in read_marks(marks) if mark["party"] == name})


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line in /proc/self/status")


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


@pytest.mark.parametrize(("protocol", "transport"), [("sflv1", "tcp"), ("sflv2", "ipc")])
def test_two_clients_learn_and_write_the_run_folder(protocol, transport, splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run(
        [
            *splitfed_cmd,
            "run",
            protocol,
            "--clients",
            "2",
            "--epochs",
            "4",
            "--transport",
            transport,
            "--out",
            str(out),
            "--seed",
            "3",
        ]
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.9, summary
    for key in (
        "protocol",
        "clients",
        "epochs",
        "test_accuracy",
        "test_macro_f1",
        "test_loss",
        "train_accuracy",
        "wall_seconds",
        "bytes_sent",
        "bytes_received",
    ):
        assert summary[key] is not None, key
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    per_round = sum(r["bytes_sent"] for r in rows)
    assert 0 < per_round <= summary["bytes_sent"] < per_round * 1.01  # the total also counts the join handshake
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"] == protocol and config["clients"] == 2
    assert config["architecture"] == "cnn"  # --model auto on the 8x8 digits
    for name in ("curves.png", "confusion.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 1000, name
    mode = 0o666 & ~_umask()  # run files get what any new file of this user gets (they were 0600)
    for name in ("config.json", "summary.json", "metrics.jsonl", "checkpoint.pt", "curves.png"):
        assert (out / name).stat().st_mode & 0o777 == mode, name
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["round"] == 4


def test_same_seed_same_numbers(splitfed_cmd, tmp_path: Path) -> None:
    results = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        res = run([*splitfed_cmd, "run", "sflv1", "--clients", "2", "--epochs", "2", "--seed", "5", "--out", str(out)])
        assert res.returncode == 0, res.stderr
        s = json.loads((out / "summary.json").read_text())
        results.append((s["test_accuracy"], s["test_loss"], s["train_loss"]))
    assert results[0] == results[1]


def test_killed_client_fails_the_run_and_is_named(splitfed_cmd, tmp_path: Path) -> None:
    out, marks = tmp_path / "run", tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [*splitfed_cmd, "run", "sflv1", "--clients", "2", "--epochs", "500", "--out", str(out), "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SPLITFED_TIMELINE": str(marks)},
    )
    try:
        wait_for(out / "metrics.jsonl")
        victims = [p for p in pids_of("client-1", marks) if p != proc.pid]
        assert victims, "client-1's process not found"
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "client-1" in err and "SIGKILL" in err, err


def test_server_survives_garbage_and_reports_a_frozen_client(splitfed_cmd, start_server) -> None:
    server, address, out = start_server("--timeout", "4", clients=2, epochs=500)
    clients = []
    rogue = zmq.Context.instance().socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.setsockopt(zmq.IDENTITY, b"rogue")
    try:
        rogue.connect(address)
        replies = []
        for frames in (
            [b"\x80\x03not json"],
            [encode(Message("forward"))[0], b"extra"],
            encode(Message("forward", tensors={"acts": torch.ones(2)})),
        ):
            rogue.send_multipart(frames)
            assert rogue.poll(10_000), "the server did not answer a malformed message"
            replies.append(decode(rogue.recv_multipart()))
        assert [r.kind for r in replies] == ["error"] * 3
        assert "malformed" in replies[0].meta["error"] and "unknown client" in replies[2].meta["error"]
        for i in range(2):
            clients.append(
                subprocess.Popen(
                    [
                        *splitfed_cmd,
                        "client",
                        "--server",
                        address,
                        "--name",
                        f"client-{i}",
                        "--shard",
                        "auto",
                        "--timeout",
                        "30",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for(out / "metrics.jsonl")
        clients[1].send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        _, err = server.communicate(timeout=30)
        assert server.returncode != 0
        assert time.monotonic() - frozen_at < 15
        assert "client-1" in err and "4 s" in err, err
        assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    finally:
        rogue.close(0)
        for p in clients:
            p.kill()
            p.wait()


def test_help_explains_every_flag(splitfed_cmd, capsys) -> None:
    res = run([*splitfed_cmd, "run", "sflv1", "--help"], timeout=60)  # once as a user runs it
    assert res.returncode == 0 and "--resume" in res.stdout, res.stderr
    from splitfed.cli import build_parser, main

    for args in (["run", "--help"], ["run", "sflv2", "--help"], ["server", "sflv1", "--help"], ["client", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 0, args
        text = capsys.readouterr().out
        assert "usage:" in text and "SUPPRESS" not in text, args  # no internal default leaks into a help text
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    nested = [sub[name]._subparsers._group_actions[0].choices.values() for name in ("run", "server")]
    for p in [*nested[0], *nested[1], sub["client"], sub["server"], sub["keys"]]:
        for action in p._actions:
            assert action.help, f"{p.prog} {action.option_strings} has no help text"


def test_bad_flags_get_a_clear_error(splitfed_cmd) -> None:
    res = run([*splitfed_cmd, "run", "sflv1", "--data", "/no/such/data", "--epochs", "1"], timeout=120)
    assert res.returncode != 0 and "not found" in res.stderr
    res = run([*splitfed_cmd, "run", "sflv1", "--lr", "-1"], timeout=60)
    assert res.returncode == 1 and "--lr must be positive" in res.stderr
    if not torch.cuda.is_available():
        res = run([*splitfed_cmd, "run", "sflv1", "--device", "cuda"], timeout=60)
        assert res.returncode == 1 and "CUDA is not available" in res.stderr and "--device cpu" in res.stderr


def test_packages_install_under_the_splitfed_name() -> None:
    import splitfed.protocols.sflv1 as mod

    repo = Path(__file__).resolve().parents[1]
    assert Path(mod.__file__).parent == repo / "protocols"
    res = subprocess.run(
        ["python", "-c", "import protocols"],
        cwd="/",
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": os.path.dirname(os.sys.executable) + ":" + os.environ["PATH"]},
    )
    assert res.returncode != 0  # no bare top-level "protocols" package is installed


def test_ctrl_c_stops_cleanly_and_keeps_the_results(splitfed_cmd, tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group: exit 130, summary kept, no traceback."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*splitfed_cmd, "run", "sflv1", "--clients", "2", "--epochs", "1000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(out / "metrics.jsonl")
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout.strip().splitlines()[-1] == str(out / "summary.json")
    assert "Traceback" not in stderr and "partial results" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_done"] >= 1
    assert (out / "curves.png").exists()


def test_resume_continues_exactly_where_the_checkpoint_left_off(run_protocol, splitfed_cmd) -> None:
    """As a user resumes: `splitfed run --resume`, with Adam, whose moments live in the server's
    copies and in the clients' halves. 2 rounds + resume to 4 == 4 rounds straight (every protocol
    is checked the same way in threads in test_resume.py)."""
    common = ["--clients", "2", "--optimizer", "adam", "--seed", "7"]
    straight, _ = run_protocol("sflv1", *common, "--epochs", "4")
    first, run_dir = run_protocol("sflv1", *common, "--epochs", "2", "--out-suffix", "resumed")
    assert first["rounds_done"] == 2
    assert sorted(p.name for p in (run_dir / "clients").iterdir()) == ["client-0.pt", "client-1.pt"]
    res = run([*splitfed_cmd, "run", "sflv1", "--resume", str(run_dir), "--epochs", "4"])
    assert res.returncode == 0, res.stderr
    progress = [line.split("  ")[0] for line in res.stderr.splitlines() if " round " in line]
    assert progress == ["sflv1 round 3/4", "sflv1 round 4/4"], res.stderr  # counted against the new total
    resumed = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3, 4] and resumed["resumed_after_round"] == 2
    assert resumed["test_loss"] == pytest.approx(straight["test_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-6)
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert sum(r["bytes_sent"] for r in rows) <= resumed["bytes_sent"]
    again = run([*splitfed_cmd, "run", "sflv1", "--resume", str(run_dir), "--quiet"])
    assert again.returncode == 1 and "already has 4 round(s)" in again.stderr


def test_a_late_client_still_joins(splitfed_cmd, start_server) -> None:
    """Joining has its own, long deadline: a client may start well after --timeout has passed."""
    server, address, _ = start_server("--timeout", "2", "--join-timeout", "60")
    time.sleep(5)
    assert server.poll() is None, server.stderr.read()  # still waiting, 2.5x past --timeout
    client = run([*splitfed_cmd, "client", "--server", address, "--name", "late", "--shard", "auto"])
    assert client.returncode == 0, client.stderr
    assert server.wait(60) == 0


class _Exited:
    """A party's process that has exited with ``returncode``."""

    def __init__(self, returncode: int, pid: int) -> None:
        self.returncode, self.pid = returncode, pid

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def test_a_killed_client_is_named_even_when_the_server_failed_on_losing_it(tmp_path: Path) -> None:
    """The launcher may learn both exits at once (the server noticed the lost client before the launcher's
    next look); the killed client is the cause, not the server's 'lost client-1'."""
    from splitfed.errors import PartyFailedError
    from splitfed.runtime.launcher import Party, _watch

    parties = [
        Party("server", _Exited(1, 101), tmp_path / "server.log", started=time.time() - 60),
        Party("client-0", _Exited(0, 102), tmp_path / "client-0.log"),
        Party("client-1", _Exited(-signal.SIGKILL, 103), tmp_path / "client-1.log"),
    ]
    error = "sflv1 server: lost client-1: not connected (it exited or never joined)"
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed", "error": error}))  # this launch's
    with pytest.raises(PartyFailedError, match="client-1 .*SIGKILL"):
        _watch(parties, tmp_path)


def test_a_rounds_records_are_written_whole_when_a_signal_comes_in_between() -> None:
    """Ctrl-C between the metrics row and the summary left summary.json saying 0 rounds beside a metrics.jsonl
    with round 1 (CI saw it once); the server holds SIGINT and SIGTERM while it writes them."""
    from splitfed.runtime.server import signals_after

    class Stop(Exception):
        pass

    def stop(number: int, frame: object) -> None:
        raise Stop(number)

    before = signal.signal(signal.SIGTERM, stop)
    written = []
    try:
        with pytest.raises(Stop):
            with signals_after():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # where the signal's handler would otherwise have run
                written.append("metrics row, round count, summary")
        assert written == ["metrics row, round count, summary"]
        assert signal.getsignal(signal.SIGTERM) is stop  # as it was before the block
    finally:
        signal.signal(signal.SIGTERM, before)
