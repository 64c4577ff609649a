"""Where the seconds before round 1 go in ``splitfed run sflv1 --clients 2`` on the built-in data.

Each repeat runs the real command (1 round, ``--quiet``) with ``SPLITFED_TIMELINE`` set, so
the command, the server and each client mark their steps (splitfed/timeline.py). Times are
seconds since the command was started, medians over the repeats:

    python benchmarks/startup.py --repeat 5 [--protocol sflv1] [--clients 2]

The table lists every mark by party, then the total: the command started to round 1
started (the server's mark), and to the command's exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_run(exe: str, protocol: str, clients: int, work: Path, i: int) -> dict[tuple[str, str], float]:
    """Run the command once; return {(party, event): seconds since the command started}."""
    marks = work / f"marks{i}"
    marks.mkdir()
    env = {**os.environ, "SPLITFED_TIMELINE": str(marks)}
    cmd = [exe, "run", protocol, "--clients", str(clients), "--epochs", "1", "--quiet", "--out", str(work / f"r{i}")]
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    found = {("command", "exited"): time.time() - t0}
    for path in marks.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            m = json.loads(line)
            party = "client" if m["party"].startswith("client") else m["party"]
            key = (party, m["event"])
            # of the clients, the slowest one is what the server waits for
            found[key] = max(found.get(key, 0.0), m["t"] - t0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs to take the median of (default %(default)s)")
    parser.add_argument("--protocol", default="sflv1", help="protocol to start (default %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default %(default)s)")
    args = parser.parse_args()
    exe = shutil.which("splitfed", path=str(Path(sys.executable).parent)) or "splitfed"
    work = Path(tempfile.mkdtemp(prefix="splitfed-startup-"))
    runs = [one_run(exe, args.protocol, args.clients, work, i) for i in range(args.repeat)]
    keys = sorted({k for r in runs for k in r}, key=lambda k: statistics.median(r.get(k, 0.0) for r in runs))
    print(f"`splitfed run {args.protocol} --clients {args.clients} --epochs 1`, median of {args.repeat}")
    print("| party | mark | s since the command started |\n|---|---|---|")
    for party, event in keys:
        values = [r[(party, event)] for r in runs if (party, event) in r]
        print(f"| {party} | {event} | {statistics.median(values):.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
