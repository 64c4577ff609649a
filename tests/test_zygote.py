"""`splitfed run` forks its checks and parties from one preloading process (splitfed/runtime/zygote.py).

Real processes: the launcher is a fresh interpreter, so that what it imports is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from child_queue import ChildQueue

from splitfed.runtime import zygote
from splitfed.timeline import read_marks

LAUNCHER = textwrap.dedent(
    """
    import json, os, sys
    from splitfed.cli import main
    code = main(sys.argv[1:])
    print(json.dumps({"code": code, "torch": "torch" in sys.modules, "pid": os.getpid()}))
    """
)


def launch(argv: list[str], marks: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run ``splitfed ARGV`` in a fresh interpreter with a timeline in ``marks``; the process and its report."""
    marks.mkdir()
    env = {**os.environ, "SPLITFED_TIMELINE": str(marks), **env}
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, text=True, timeout=300, env=env)
    lines = done.stdout.strip().splitlines()
    return done, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None)


def forked(marks: Path) -> dict[str, dict]:
    """The "forked" mark of every process forked from the zygote, by party."""
    return {mark["party"]: mark for mark in read_marks(marks) if mark["event"] == "forked"}


def test_the_launcher_imports_no_torch_and_every_party_forks_from_one_preloaded_zygote(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done, report = launch(["run", "sflv1", "--clients", "2", "--epochs", "1", "--out", str(out)], tmp_path / "marks")
    assert report is not None and report["code"] == 0, done.stderr
    assert report["torch"] is False  # the command that watches the parties holds no torch
    parties = forked(tmp_path / "marks")
    assert set(parties) == {"check", "server", "client-0", "client-1"}
    zygotes = {m["ppid"] for m in parties.values()}
    assert len(zygotes) == 1 and report["pid"] not in zygotes  # one parent for all, not the launcher
    assert all(m["preloaded"] for m in parties.values())  # torch was imported before they were forked
    for name in ("server", "client-0", "client-1"):  # each party's own log, as before
        assert (out / "logs" / f"{name}.log").read_text().strip(), name
    assert "client-1 finished after 1 round(s)" in (out / "logs" / "client-1.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["peak_memory_mb"] > 50
    assert done.stdout.strip().splitlines()[-2] == str(out / "summary.json")


def test_a_failing_check_prints_one_error_starts_no_party_and_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["run", "sflv1", "--clients", "2", "--cut", "99", "--out", str(out)]
    done, report = launch(argv, tmp_path / "marks")
    assert report is not None and report["code"] == 1 and report["torch"] is False
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cut" in lines[0], done.stderr
    assert not out.exists()
    assert set(forked(tmp_path / "marks")) == {"check"}  # the check ran in a child; no server, no client


def test_usage_errors_keep_their_exit_status(tmp_path: Path) -> None:
    done, report = launch(["run", "sflv1", "--clients", "two"], tmp_path / "usage")
    assert report is not None and report["code"] == 2 and "invalid int value" in done.stderr


def test_a_run_with_many_clients_ends_and_records_its_peak_memory(tmp_path: Path) -> None:
    """More parties than a Unix datagram queue holds (net.unix.max_dgram_qlen, 10 here): every party's end,
    and its peak memory, come back through the zygote's exit reports, so nothing blocks at the end."""
    out = tmp_path / "run"
    argv = ["run", "fedavg", "--clients", "12", "--epochs", "1", "--out", str(out), "--quiet"]
    done, report = launch(argv, tmp_path / "marks")
    assert report is not None and report["code"] == 0, done.stderr
    assert len([p for p in forked(tmp_path / "marks") if p.startswith("client-")]) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["peak_memory_mb"] > 50


def test_zygote_and_fresh_processes_give_the_same_numbers(tmp_path: Path) -> None:
    """A forked party starts from the zygote's state, not a fresh interpreter's: the results must not notice."""
    found = []
    for i, no_zygote in enumerate(("0", "1")):
        out = tmp_path / f"run{i}"
        argv = ["run", "sflv1", "--clients", "2", "--epochs", "2", "--seed", "3", "--out", str(out), "--quiet"]
        done, report = launch(argv, tmp_path / f"marks{i}", SPLITFED_NO_ZYGOTE=no_zygote)
        assert report is not None and report["code"] == 0, done.stderr
        assert bool(forked(tmp_path / f"marks{i}")) is (no_zygote == "0")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        found.append([(r["train_loss"], r["test_loss"], r["test_accuracy"]) for r in rows])
    assert found[0] == found[1]


def _threads_after_fork(queue) -> None:  # noqa: ANN001 - a multiprocessing queue
    import torch

    torch.set_num_threads(2)
    a = torch.randn(600, 600)
    for _ in range(4):
        a = (a @ a).tanh()
    queue.put((torch.get_num_threads(), len(os.listdir("/proc/self/task"))))


def test_the_zygote_starts_no_threads_so_a_forked_party_sizes_its_own() -> None:
    """No OpenMP pool (nor CUDA) in the zygote before it forks: a party's set_num_threads takes effect."""
    queue = ChildQueue()
    try:
        child = zygote.fork(_threads_after_fork, queue)
        assert child.wait(timeout=120) == 0
        threads, tasks = queue.get()
    finally:
        queue.close()
    assert threads == 2 and tasks >= 2  # the matrix products ran on a pool of the party's own
    assert len(os.listdir(f"/proc/{zygote.zygote_pid()}/task")) == 1  # the zygote itself: one thread


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """multiprocessing re-runs the parent's __main__ in a forkserver child unless told not to; a user's
    unguarded script calling splitfed.run() would then start a run inside each of its parties."""
    script = tmp_path / "train.py"
    out = tmp_path / "run"
    script.write_text(
        f"import splitfed\nresult = splitfed.run('sflv1', clients=2, epochs=1, out={str(out)!r})\n"
        "print('accuracy', result.test_accuracy)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("accuracy") == 1
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
