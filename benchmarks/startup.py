"""Where the seconds before round 1 go in ``splitfed run sflv1 --clients 2`` on the built-in data.

Each repeat runs the real command (1 round, ``--quiet``) with ``SPLITFED_TIMELINE`` set, so
the command, the server and each client mark their steps (splitfed/timeline.py). Times are
seconds since the command was started, medians over the repeats:

    python benchmarks/startup.py --repeat 5 [--protocol sflv1] [--clients 2] [--baseline TREE]

The table lists every mark by party, in time order, and the CPU seconds all the run's
processes used (which, unlike the marks, hardly depend on how loaded the machine is);
"round 1 starts" (the server's mark) is the figure the start-up goal is about. ``--baseline TREE`` (another checkout of
splitfed, e.g. ``git worktree add --detach /tmp/before main``) runs it too, alternating
with this checkout, so both columns come from the same machine load: with TREE's own
``.venv`` where it has one (its own entry points: the protocols' moved in issue 13), else
through a ``sitecustomize`` shim that points this environment's editable install there.
The zygote's marks (preloading, preloaded) exist from issue 13 on.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIM = """import os, sys
tree, here = os.environ.get("SPLITFED_TREE"), os.environ.get("SPLITFED_TREE_FROM")
for name, mod in list(sys.modules.items()):
    if tree and name.startswith("__editable___splitfed") and hasattr(mod, "MAPPING"):
        mod.MAPPING.update({k: v.replace(here, tree) for k, v in mod.MAPPING.items()})
"""


#: derived rows: seconds from one mark to another, medians of each run's own
SPANS = {
    "the zygote's imports (preloading to preloaded)": (("zygote", "preloading"), ("zygote", "preloaded")),
    "zygote preloaded to round 1": (("zygote", "preloaded"), ("server", "round 1 starts")),
}


def tree_env(work: Path, tree: Path | None) -> dict[str, str]:
    """The environment that runs the checkout ``tree`` (None: this one) through this venv's editable install."""
    if tree is None:
        return dict(os.environ)
    shim = work / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(SHIM)
    here = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": str(shim), "SPLITFED_TREE": str(tree.resolve()), "SPLITFED_TREE_FROM": here}


def tree_exe(tree: Path | None, here: str) -> str:
    """The ``splitfed`` command that runs ``tree``: its own environment's, else this one's (``here``)."""
    own = None if tree is None else tree / ".venv" / "bin" / "splitfed"
    return str(own) if own is not None and own.exists() else here


def one_run(exe: str, protocol: str, clients: int, work: Path, i: int, env: dict) -> dict[tuple[str, str], float]:
    """Run the command once; return {(party, event): seconds since the command started}."""
    marks = work / f"marks{i}"
    marks.mkdir()
    env = {**env, "SPLITFED_TIMELINE": str(marks)}
    cmd = [exe, "run", protocol, "--clients", str(clients), "--epochs", "1", "--quiet", "--out", str(work / f"r{i}")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    # from the work folder: run from a checkout, a command's `python -c` children would import that checkout's splitfed
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=work)
    found = {("command", "exited"): time.time() - t0}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of every process of the run: the work itself, which a loaded machine only spreads out in time
    found[("all processes", "CPU seconds (user + system), whole run")] = (after.ru_utime + after.ru_stime) - (
        before.ru_utime + before.ru_stime
    )
    from splitfed.timeline import read_marks

    for m in read_marks(marks):
        party = "client" if m["party"].startswith("client") else m["party"]
        key = (party, m["event"])
        # of the clients, the slowest one is what the server waits for
        found[key] = max(found.get(key, 0.0), m["t"] - t0)
    for name, (start, end) in SPANS.items():  # the stretches that vary least with the load, per run
        if start in found and end in found:
            found[("span", name)] = found[end] - found[start]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs to take the median of (default %(default)s)")
    parser.add_argument("--protocol", default="sflv1", help="protocol to start (default %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default %(default)s)")
    parser.add_argument("--baseline", type=Path, help="another splitfed checkout to time alongside, alternating")
    args = parser.parse_args()
    exe = shutil.which("splitfed", path=str(Path(sys.executable).parent)) or "splitfed"
    work = Path(tempfile.mkdtemp(prefix="splitfed-startup-"))
    trees = {"this checkout": None, **({"baseline": args.baseline} if args.baseline else {})}
    exes = {name: tree_exe(tree, exe) for name, tree in trees.items()}
    envs = {name: dict(os.environ) if exes[name] != exe else tree_env(work, tree) for name, tree in trees.items()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(args.repeat):
        order = list(envs.items()) if i % 2 == 0 else list(envs.items())[::-1]  # neither always goes first
        for k, (name, env) in enumerate(order):
            runs[name].append(one_run(exes[name], args.protocol, args.clients, work, i * len(envs) + k, env))
    print(f"`splitfed run {args.protocol} --clients {args.clients} --epochs 1`, median of {args.repeat}")
    names = list(runs)
    print("| party | mark | " + " | ".join(f"s, {n}" for n in names) + " |\n|---|---|" + "---|" * len(names))
    keys = sorted({k for r in runs.values() for x in r for k in x}, key=lambda k: (k[0] == "span", _earliest(runs, k)))
    for party, event in keys:
        cells = " | ".join(_fmt(_median(runs[n], (party, event))) for n in names)
        print(f"| {party} | {event} | {cells} |")
    shutil.rmtree(work, ignore_errors=True)


def _earliest(runs: dict[str, list[dict]], key: tuple[str, str]) -> float:
    """The smallest median of a mark over the checkouts, to order the table by (a mark one lacks included)."""
    return min((m for r in runs.values() if (m := _median(r, key)) is not None), default=1e9)


def _median(runs: list[dict], key: tuple[str, str]) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
