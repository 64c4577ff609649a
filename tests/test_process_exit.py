"""A finished splitfed command ends without the interpreter's module teardown, and loses nothing by it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import atexit, logging, sys, threading, time
    import torch  # exit_now skips the teardown only where torch is loaded
    from splitfed.runtime.process_exit import exit_now

    logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
    atexit.register(lambda: print("the atexit handler ran"))

    def late():
        time.sleep(0.3)
        print("the non-daemon thread finished")

    threading.Thread(target=late).start()
    logging.getLogger("x").info("a line for the log file")
    print("buffered, not flushed", end="")
    exit_now(int(sys.argv[2]))
    print("not reached")
    """
)


def test_exit_now_keeps_the_status_output_threads_and_atexit_handlers(tmp_path: Path) -> None:
    for status in (0, 3):
        log = tmp_path / f"log{status}.txt"
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(log), str(status)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == status, done.stderr
        out = done.stdout
        assert "buffered, not flushed" in out and "not reached" not in out, out
        # the interpreter's order: non-daemon threads first, then the atexit handlers
        assert out.index("the non-daemon thread finished") < out.index("the atexit handler ran"), out
        assert "a line for the log file" in log.read_text()


def test_the_splitfed_command_keeps_its_exit_status_and_last_words(tmp_path: Path) -> None:
    """Usage errors (2), bad settings (1) and a finished command (0), each with what it printed, via ``-m splitfed``."""
    exe = [sys.executable, "-m", "splitfed"]
    usage = subprocess.run([*exe, "run", "sflv1", "--epochs", "x"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "invalid int value" in usage.stderr, usage.stderr
    bad = subprocess.run([*exe, "evaluate", str(tmp_path / "no-such-run")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("error: "), bad.stderr
    listing = subprocess.run([*exe, "protocols"], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0 and "sflv1" in listing.stdout, listing.stderr


def test_exit_now_stops_a_thread_pool_as_the_interpreter_would(tmp_path: Path) -> None:
    """A ThreadPoolExecutor's idle workers are non-daemon threads that only stop when told at exit: no hang."""
    script = (
        "import torch\nfrom concurrent.futures import ThreadPoolExecutor\n"
        "from splitfed.runtime.process_exit import exit_now\n"
        "pool = ThreadPoolExecutor(2)\nprint(sum(pool.map(abs, [-1, -2])))\nexit_now(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
