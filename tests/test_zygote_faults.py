"""What `splitfed run` does when its zygote, its checks or a signal go wrong (splitfed/runtime/zygote.py).

Real processes: each command is a fresh interpreter in a session of its own. A hang is caught by
the subprocess's timeout, far below the runs' --join-timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from test_zygote import forked

#: a command that first runs PRELUDE (to break something on purpose), then ``splitfed ARGV``
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    {prelude}
    from splitfed.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def command(tmp_path: Path, prelude: str, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run ``splitfed ARGV`` after ``prelude``, with modules written to ``tmp_path`` importable (by the zygote too)."""
    script = SCRIPT.format(prelude=textwrap.dedent(prelude))
    env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *argv], capture_output=True, text=True, timeout=150, env=env
    )


def forked_pids(marks: Path) -> dict[str, int]:
    """The pid of every process forked from the zygote, by party (its "forked" timeline mark)."""
    return {party: mark["pid"] for party, mark in forked(marks).items()}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_a_party_that_cannot_start_stops_those_already_started(tmp_path: Path) -> None:
    """The third fork fails (as when the zygote dies): the server and client-0 already run; they must be
    stopped, not left waiting for clients that never come while the command waits for them at exit.
    (zygote.fork returns before the zygote has forked: the stand-in waits until the first two have been.)"""
    prelude = """
        from splitfed.errors import SplitFedError
        from splitfed.runtime import zygote
        real, calls, made = zygote.fork, [], []
        def fork(*args, **kwargs):
            calls.append(kwargs.get("name"))
            if len(calls) == 4:  # the check, the server, client-0, then client-1
                assert all(child.pid for child in made)  # the server and client-0 forked: they run
                raise SplitFedError("no zygote to fork client-1 from")
            made.append(real(*args, **kwargs))
            return made[-1]
        zygote.fork = fork
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    argv = ["run", "sflv1", "--clients", "3", "--join-timeout", "600", "--out", str(tmp_path / "run")]
    done = command(tmp_path, prelude, argv, SPLITFED_TIMELINE=str(marks))
    assert done.returncode == 1, done.stderr
    assert error_lines(done.stderr) == ["error: no zygote to fork client-1 from"], done.stderr
    pids = forked_pids(marks)
    assert set(pids) == {"check", "server", "client-0"}
    assert not [name for name, pid in pids.items() if alive(pid)]


def test_a_zygote_that_dies_while_preloading_gives_one_error_line(tmp_path: Path) -> None:
    """A protocol plugin raising at import kills the zygote: its traceback, then one error naming the way out."""
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('the plugin is broken')\n")
    prelude = """
        from splitfed.runtime import zygote
        zygote.PRELOAD.append("broken_plugin")
    """
    argv = ["run", "sflv1", "--clients", "1", "--out", str(tmp_path / "run")]
    done = command(tmp_path, prelude, argv, PYTHONPATH=str(tmp_path))  # the zygote (Python 3.11) ignores sys.path
    assert done.returncode == 1, done.stderr
    assert "RuntimeError: the plugin is broken" in done.stderr  # the cause, printed by the zygote
    (line,) = error_lines(done.stderr)
    assert "zygote" in line and "SPLITFED_NO_ZYGOTE=1" in line
    assert "popen_forkserver" not in done.stderr  # no traceback of the command's own
    assert not (tmp_path / "run").exists()


def test_checks_killed_by_a_signal_are_reported(tmp_path: Path) -> None:
    """The out-of-memory killer ends the checks: say so, rather than exit silently with status 247."""
    (tmp_path / "killed_check.py").write_text(
        "import os, signal\n\ndef check(*args):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    prelude = """
        import killed_check
        from splitfed import cli_run
        cli_run.check_in_child = killed_check.check
    """
    done = command(tmp_path, prelude, ["run", "sflv1", "--clients", "1", "--out", str(tmp_path / "run")])
    assert done.returncode == 1, done.stderr
    (line,) = error_lines(done.stderr)
    assert "checks were killed by SIGKILL" in line
    assert "Traceback" not in done.stderr


def test_sigterm_to_the_process_group_stops_each_party_once(tmp_path: Path) -> None:
    """timeout(1) or `kill -- -PGID`: every process gets SIGTERM at once, the zygote too. Each party stops
    once, cleanly: exit 143, the server's summary says interrupted, no 'Terminated' traceback in any log."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "splitfed", "run", "sflv1", "--clients", "2", "--epochs", "1000", "--out", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # a round done: every party is in its loop
            assert time.monotonic() < deadline and proc.poll() is None, "the run did not reach round 1"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "partial results" in stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    for log in (out / "logs").glob("*.log"):
        assert "Terminated" not in log.read_text(), log
