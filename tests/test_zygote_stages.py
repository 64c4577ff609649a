"""The zygote of our own (splitfed/runtime/zygote_main.py): its start, its imports, its death, its queue.

The console script starts the zygote before it imports the command line; requests sent while it
still imports are served (or cancelled) after; a child outlives a killed zygote neither unseen nor
unreported.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from child_queue import ChildQueue

from splitfed.entry import starts_zygote
from splitfed.errors import SplitFedError
from splitfed.runtime import zygote
from splitfed.timeline import read_marks


def test_a_run_forks_its_checks_and_parties_from_one_zygote_that_imported_everything_first(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "splitfed", "run", "sflv1", "--clients", "1", "--epochs", "1", "--out", str(out)]
    env = {**os.environ, "SPLITFED_TIMELINE": str(marks)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    forked = {m["party"]: m for m in read_marks(marks) if m["event"] == "forked"}
    assert set(forked) == {"check", "server", "client-0"}
    zygotes = sorted((m for m in read_marks(marks) if m["party"] == "zygote"), key=lambda m: m["t"])
    assert [m["event"] for m in zygotes] == ["preloading", "preloaded"]
    assert all(m["preloaded"] and m["t"] >= zygotes[-1]["t"] for m in forked.values())
    assert len({m["ppid"] for m in forked.values()}) == 1


@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        (["run", "sflv1", "--clients", "2"], True),
        (["-v", "bench", "--protocols", "sflv1"], True),
        (["run", "sflv1", "--help"], False),
        (["run", "-h"], False),
        (["protocols"], False),
        (["--version"], False),
        (["server", "sflv1", "--clients", "2"], False),
        (["client", "--server", "tcp://127.0.0.1:5555"], False),
    ],
)
def test_only_commands_that_fork_parties_start_a_zygote_first(argv: list[str], starts: bool) -> None:
    assert starts_zygote(argv) is starts


def test_a_party_of_a_run_starts_no_zygote_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITFED_LOG_FILE", "server.log")
    assert not starts_zygote(["run", "sflv1"])


def test_help_starts_no_zygote(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "SPLITFED_TIMELINE": str(marks)}
    for argv in (["run", "sflv1", "--help"], ["protocols"]):
        done = subprocess.run([sys.executable, "-m", "splitfed", *argv], capture_output=True, env=env, timeout=60)
        assert done.returncode == 0
    assert not [m for m in read_marks(marks) if m["party"] == "zygote"]


def _sleep_bound(queue: ChildQueue) -> None:
    """A child that, as every party does, asks for SIGTERM should its zygote die, says so, then waits."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    zygote._bind_to_zygote("sf-test")
    queue.put("bound")
    time.sleep(120)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_killed_zygote_reports_its_children_lost_and_they_stop() -> None:
    zygote.stop()  # a zygote of this test's own
    queue = ChildQueue()
    try:
        child = zygote.fork(_sleep_bound, queue)
        pid = child.pid
        assert queue.get() == "bound" and child.poll() is None
        os.kill(zygote.zygote_pid(), signal.SIGKILL)
        assert child.wait(timeout=30) == zygote.LOST  # nobody is left to say how it ended
        assert _gone(pid, within=30)  # PR_SET_PDEATHSIG: it got SIGTERM, and is not left running unseen
        with pytest.raises(SplitFedError, match="SIGKILL.*SPLITFED_NO_ZYGOTE=1"):
            zygote.fork(_sleep_bound, queue)
    finally:
        queue.close()
        zygote.stop()


def test_the_command_signals_a_forked_child_through_its_zygote_never_by_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the zygote, the child's parent, knows whether the pid is still the child's (not reaped, so not
    reused); the command must not call os.kill on it itself."""
    queue = ChildQueue()
    try:
        child = zygote.fork(_sleep_bound, queue)
        assert queue.get() == "bound"

        def refuse(pid: int, sig: int) -> None:
            raise AssertionError(f"the command signalled pid {pid} itself")

        monkeypatch.setattr(os, "kill", refuse)
        sent = []
        cancel = zygote._Connection.cancel
        monkeypatch.setattr(zygote._Connection, "cancel", lambda conn, *a: sent.append(a) or cancel(conn, *a))
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == -signal.SIGTERM
        child.send_signal(signal.SIGTERM)  # ended and reported: nothing more is sent
        assert sent == [(child.ident, signal.SIGTERM)]
    finally:
        monkeypatch.undo()
        queue.close()


def _held_import(folder: Path, hold: Path) -> Path:
    """A module ``held_import`` in ``folder`` whose import waits until ``hold`` exists; returns the file that
    its import creates first (the zygote has reached it: every module before it is imported)."""
    reached = folder / "reached"
    (folder / "held_import.py").write_text(
        f"import os, time\nopen({str(reached)!r}, 'w').close()\n"
        f"while not os.path.exists({str(hold)!r}):\n    time.sleep(0.01)\n"
    )
    return reached


def _until(path: Path, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def _cleans_up_forever(queue: ChildQueue) -> None:
    """A party (its SIGTERM handler) that got SIGTERM and hangs in the cleanup that started."""
    from splitfed.cli import _raise_terminated
    from splitfed.errors import Terminated

    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    zygote._bind_to_zygote("sf-test")
    queue.put("bound")
    try:
        time.sleep(120)
    except Terminated:
        queue.put("cleaning up")
        time.sleep(120)


def test_a_party_in_its_cleanup_is_killed_should_its_zygote_die() -> None:
    """After its first SIGTERM a party ignores SIGTERM, the signal a dying zygote sends; with the zygote gone
    nobody could stop it any more, so it must get SIGKILL instead."""
    zygote.stop()
    queue = ChildQueue()
    pid = None
    try:
        child = zygote.fork(_cleans_up_forever, queue)
        assert queue.get() == "bound"
        pid = child.pid
        child.send_signal(signal.SIGTERM)
        assert queue.get() == "cleaning up"
        os.kill(zygote.zygote_pid(), signal.SIGKILL)
        assert _gone(pid, within=30)
    finally:
        if pid is not None and not _gone(pid, within=0.1):
            os.kill(pid, signal.SIGKILL)
        queue.close()
        zygote.stop()


def test_a_party_signalled_before_its_fork_is_not_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the zygote still imports: the launcher stops a party it asked for but the zygote has not
    forked yet; it must never start, nor hold the command up."""
    hold = tmp_path / "go"
    _held_import(tmp_path, hold)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(zygote, "PRELOAD", [*zygote.PRELOAD, "held_import"])  # the zygote waits in its imports
    zygote.stop()
    queue = ChildQueue()
    try:
        child = zygote.fork(_sleep_bound, queue)
        child.send_signal(signal.SIGTERM)
        hold.touch()
        assert child.wait(timeout=60) == -signal.SIGTERM
        assert child.pid is None  # never forked
        assert queue.empty()
    finally:
        queue.close()
        zygote.stop()


def test_ctrl_c_while_the_zygote_imports_starts_no_party_late(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher's Ctrl-C path lets the parties settle on the SIGINT the terminal sent them; one the
    zygote has not forked yet never got it, so it is stopped at once instead of starting after the import."""
    from splitfed.runtime.launcher import Party, _stop

    hold = tmp_path / "go"
    reached = _held_import(tmp_path, hold)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(zygote, "PRELOAD", [*zygote.PRELOAD, "held_import"])
    zygote.stop()
    queue = ChildQueue()
    release = threading.Timer(0.5, hold.touch)
    try:
        party = Party("client-0", zygote.fork(_sleep_bound, queue), tmp_path / "client-0.log")
        _until(reached)  # the zygote waits in its last import: the party cannot be forked before hold exists
        release.start()
        _stop([party], first=signal.SIGINT, settle=120)
        assert party.proc.returncode == -signal.SIGINT
        assert party.proc.pid is None and queue.empty()  # never forked
    finally:
        release.cancel()
        hold.touch()
        queue.close()
        zygote.stop()


def test_the_child_queue_carries_json_and_pickles_as_its_address() -> None:
    queue = ChildQueue()
    try:
        assert queue.empty()
        copy = pickle.loads(pickle.dumps(queue))  # as a forked child gets it
        copy.put(("server", 1234))
        assert not queue.empty()
        assert queue.get() == ("server", 1234)
        with pytest.raises(RuntimeError, match="only the process"):
            copy.get()
        assert json.loads(json.dumps(copy.path)) == queue.path
    finally:
        queue.close()


def _signals_held(queue: ChildQueue) -> None:
    """A forked child before zygote.enter: a SIGINT sent to it now must be held (blocked), not ignored."""
    os.kill(os.getpid(), signal.SIGINT)
    queue.put([signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.SIGINT in signal.sigpending()])


def test_a_signal_sent_before_a_child_is_ready_is_held_not_lost() -> None:
    queue = ChildQueue()
    try:
        child = zygote.fork(_signals_held, queue)
        assert queue.get() == (True, True)  # blocked, and pending until enter() unblocks it with its handler in place
        assert child.wait(timeout=60) == 0
    finally:
        queue.close()


def _touch(path: str) -> None:
    Path(path).touch()


def test_the_zygote_forks_nothing_for_a_command_that_has_gone(tmp_path: Path) -> None:
    """A request and the command's end (EOF) that reach a busy zygote together: it must see both before it
    forks, and fork nothing (no one would watch the child)."""
    hold, made = tmp_path / "go", tmp_path / "forked"
    _held_import(tmp_path, hold)
    command = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(tmp_path)!r})
        from splitfed.runtime import zygote
        from splitfed.timeline import read_marks
        from test_zygote_stages import _touch
        zygote.PRELOAD = [*zygote.PRELOAD, "held_import"]  # the zygote waits in its last import
        zygote.start()
        while not any(m["event"] == "preloading" for m in read_marks({str(tmp_path / "marks")!r})):
            time.sleep(0.02)  # until the zygote imports: it reads nothing meanwhile
        child = zygote.fork(_touch, {str(made)!r})  # served only after that import
        print(zygote.zygote_pid(), flush=True)
        os._exit(0)  # killed, say: no goodbye, no stop()
        """
    )
    (tmp_path / "marks").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    env["SPLITFED_TIMELINE"] = str(tmp_path / "marks")
    # the zygote inherits the command's stdout: read the one line, do not wait for the pipe to close
    command_proc = subprocess.Popen([sys.executable, "-c", command], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(command_proc.stdout.readline())
        assert command_proc.wait(timeout=120) == 0
    finally:
        hold.touch()
        command_proc.stdout.close()
    assert _gone(pid, within=120), "the zygote did not end"
    assert not made.exists()


class _FakeSock:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail, self.closed, self.data = fail, False, b""

    def sendall(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.data += data

    def close(self) -> None:
        self.closed = True


def test_a_request_cut_short_closes_the_connection_instead_of_garbling_it() -> None:
    """Ctrl-C in the middle of a send: the zygote must not read the next message as the rest of this one."""
    sock = _FakeSock(KeyboardInterrupt())
    conn = zygote._Connection(sock, None)  # no zygote: what it would say is fed by hand
    with pytest.raises(KeyboardInterrupt):
        conn.request(_touch, ("x",))
    assert conn.lost and sock.closed
    with pytest.raises(EOFError):
        conn.request(_touch, ("x",))


def test_a_child_that_reuses_an_earlier_childs_pid_is_not_taken_for_it() -> None:
    a, b = socket.socketpair()
    conn = zygote._Connection(a, None)
    try:
        b.sendall(b'{"id": 1, "pid": 4242}\n{"exit": 4242, "code": 0, "maxrss": 5000}\n')
        while 4242 not in conn.codes:
            conn.pump(1.0)
        assert zygote.Forked(conn, 1).poll() == 0 and zygote.Forked(conn, 1).peak_kb == 5000
        b.sendall(b'{"id": 2, "pid": 4242}\n')  # a later child, forked with the same pid
        while 2 not in conn.pids:
            conn.pump(1.0)
        assert zygote.Forked(conn, 2).poll() is None and zygote.Forked(conn, 2).peak_kb == 0  # still running
    finally:
        a.close()
        b.close()


def _bound_late(queue: ChildQueue, go: str) -> None:
    """A child whose zygote dies before it binds itself to it (the prctl would then come too late)."""
    queue.put("forked")
    while not os.path.exists(go):
        time.sleep(0.01)
    zygote._bind_to_zygote("sf-test")  # SIGTERM is still blocked here, as in every child before enter() ends
    queue.put(signal.SIGTERM in signal.sigpending())


def test_a_child_orphaned_before_it_binds_to_the_zygote_still_stops(tmp_path: Path) -> None:
    zygote.stop()  # a zygote of this test's own
    queue, go = ChildQueue(), tmp_path / "go"
    try:
        child = zygote.fork(_bound_late, queue, str(go))
        assert queue.get() == "forked"
        os.kill(zygote.zygote_pid(), signal.SIGKILL)
        assert child.wait(timeout=30) == zygote.LOST
        go.touch()
        assert queue.get() is True  # it sent itself the SIGTERM its zygote's death would have
    finally:
        queue.close()
        zygote.stop()


class _Check:
    """A check the launcher waits for; ``forked`` as the zygote last told."""

    def __init__(self, forked: bool) -> None:
        self.forked, self.signals, self.waits = forked, [], []

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if self.signals:
            return -self.signals[-1]
        raise subprocess.TimeoutExpired("check", timeout)


def test_an_interrupted_check_not_forked_yet_is_cancelled_at_once() -> None:
    """Ctrl-C while the zygote imports: the check never got the terminal's SIGINT, so waiting for it to stop
    on its own would only hold the command up."""
    from splitfed.cli_run import _end_check

    unforked, forked = _Check(forked=False), _Check(forked=True)
    _end_check(unforked)
    _end_check(forked)
    assert unforked.signals == [signal.SIGINT] and len(unforked.waits) == 1  # cancelled, then reported at once
    assert forked.signals == [signal.SIGTERM] and len(forked.waits) == 2  # it had the SIGINT: a moment, then SIGTERM
