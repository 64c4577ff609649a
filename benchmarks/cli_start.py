"""How fast splitfed starts: the command's help, `import splitfed`, and a 1-round run in one
process against the same run as processes. Medians of --repeat runs, alternating.

    python benchmarks/cli_start.py --repeat 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("splitfed", path=str(Path(sys.executable).parent)) or "splitfed"
    work = Path(tempfile.mkdtemp(prefix="splitfed-start-"))
    run = (
        "import splitfed, sys; "
        "splitfed.run('sflv1', clients=2, epochs=1, out=sys.argv[1], in_process=sys.argv[2] == '1')"
    )
    cases = {
        "splitfed --help": lambda i: [exe, "--help"],
        "splitfed --version": lambda i: [exe, "--version"],
        "python -c 'import splitfed'": lambda i: [sys.executable, "-c", "import splitfed"],
        "splitfed run --help (loads the protocols)": lambda i: [exe, "run", "--help"],
        "splitfed.run(sflv1, 2 clients, 1 round), processes": lambda i: [
            sys.executable,
            "-c",
            run,
            str(work / f"p{i}"),
            "0",
        ],
        "splitfed.run(sflv1, 2 clients, 1 round), in_process": lambda i: [
            sys.executable,
            "-c",
            run,
            str(work / f"t{i}"),
            "1",
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(args.repeat):
        for name, cmd in cases.items():
            times[name].append(timed(cmd(i)))
    print(f"| command | median s of {args.repeat} | min s |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
