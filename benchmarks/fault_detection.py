"""How long every process takes to exit after a fault: a dead server, a frozen server, a NaN loss.

    python benchmarks/fault_detection.py [--timeout 5]

Dead / frozen: ``splitfed server sflv1`` and two ``splitfed client`` processes with
``--timeout T``; after round 1 the server gets SIGKILL or SIGSTOP, and the time until each
client has exited is measured. NaN: ``splitfed run sflv1 --optimizer sgd --lr 1e6``
diverges in its first round; the time from the moment the server logs the divergence to
the command's exit (every party stopped) is measured. Not a test: the tests assert the
behaviour, this prints the seconds for the issue notes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from splitfed.runtime.launcher import free_tcp_address

EXE = os.path.join(os.path.dirname(sys.executable), "splitfed")


def server_fault(fault: signal.Signals, timeout: float, tmp: Path) -> list[float]:
    address, out = free_tcp_address(), tmp / f"run-{fault.name}"
    server = subprocess.Popen(
        [EXE, "server", "sflv1", "--clients", "2", "--epochs", "1000", "--timeout", str(timeout)]
        + ["--address", address, "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    clients = [
        subprocess.Popen(
            [EXE, "client", "--server", address, "--name", f"client-{i}", "--shard", "auto"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    while not (out / "metrics.jsonl").exists():
        time.sleep(0.02)
    server.send_signal(fault)
    struck, exited = time.monotonic(), []
    for c in clients:
        c.wait(600)
        exited.append(time.monotonic() - struck)
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait()
    return exited


def divergence(tmp: Path) -> float:
    out = tmp / "run-nan"
    subprocess.run(
        [EXE, "run", "sflv1", "--clients", "2", "--epochs", "3", "--optimizer", "sgd", "--lr", "1e6"]
        + ["--out", str(out), "--quiet"],
        capture_output=True,
    )
    ended = datetime.datetime.now()
    line = next(line for line in (out / "logs" / "server.log").read_text().splitlines() if "diverged" in line)
    seen = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return (ended - seen).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="--timeout of the run (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for fault in (signal.SIGKILL, signal.SIGSTOP):
            times = server_fault(fault, args.timeout, Path(tmp))
            print(
                f"server {fault.name}, --timeout {args.timeout:g}: clients exited after "
                + ", ".join(f"{t:.1f} s" for t in times)
            )
        print(f"NaN loss: every process exited {divergence(Path(tmp)):.1f} s after the server saw it")


if __name__ == "__main__":
    main()
