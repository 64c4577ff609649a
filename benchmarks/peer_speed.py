"""splitfed's SFLv1 beside a one-process loop with the original SplitFed code's control flow.

The peer loop (``reference``, written here, in one process with every core) does what the
original SFLv1 implementation does each round: the clients train one after another in a
random order; each trains a fresh copy of the global client half with an Adam made once per
client per round; for every batch the server deep-copies that client's server copy, makes a
new Adam, takes one step and copies the result back; the server copies are averaged
(unweighted) after the last client's last batch and the client halves after all clients;
it evaluates after each client's training. It uses splitfed's data shards, batch orders and
model halves, so both sides see the same rows, batches and model.

Runs alternate (reference, splitfed, splitfed --precision bf16-mixed, ...), each a fresh
process tree, sampled every 0.2 s from /proc: CPU seconds and PSS (smaps_rollup) summed over
the tree. Per run: s/round (wall of the rounds), CPU s/round (all processes, during the
rounds), busy cores (the two divided), peak summed PSS, start-up to first batch, whole
command, final test accuracy. Prints medians with min-max, as Markdown.

    python benchmarks/peer_speed.py --repeats 3 --epochs 3 --out bench/peer
    python benchmarks/peer_speed.py --precisions 32 --launchers zygote,processes   # memory: forked vs new processes
    python benchmarks/peer_speed.py --precisions 32 --baseline /tmp/before   # this checkout beside another
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

TICK = 0.2
#: the splitfed command: the repository's environment's, else the one on PATH (e.g. a GPU machine's install)
SPLITFED = str(REPO / ".venv" / "bin" / "splitfed")
if not os.path.exists(SPLITFED):
    SPLITFED = shutil.which("splitfed") or "splitfed"


def tree(root: int) -> list[int]:
    """``root`` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_and_pss(pids: list[int]) -> tuple[float, float]:
    """Summed CPU seconds (user + system) and PSS (MB) of ``pids``."""
    tick = 100.0
    cpu = pss = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return cpu, pss


def watch(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, list[tuple[float, float, float]], dict[int, float]]:
    """Run ``cmd``; return its start time, samples (t, CPU s, PSS MB) and each process's last CPU seconds."""
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    samples: list[tuple[float, float, float]] = []
    last: dict[int, float] = {}
    while proc.poll() is None:
        pids = tree(proc.pid)
        for pid in pids:  # keep each process's CPU, so that an exited one still counts
            last[pid] = max(last.get(pid, 0.0), cpu_and_pss([pid])[0])
        samples.append((time.time(), sum(last.values()), cpu_and_pss(pids)[1]))
        time.sleep(TICK)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
    return started, samples, last


def cpu_at(samples: list[tuple[float, float, float]], t: float) -> float:
    """CPU seconds of the tree at time ``t``, from the nearest sample at or before it."""
    before = [s for s in samples if s[0] <= t]
    return (before[-1] if before else samples[0])[1]


def measure(
    cmd: list[str], out: Path, marks_from_files: bool = False, env: dict[str, str] | None = None
) -> dict[str, float]:
    """One run: figures from the /proc samples and the marks it leaves in OUT/marks.json."""
    load = os.getloadavg()[0]  # how busy the machine was as the run started (other jobs included)
    started, samples, _ = watch(cmd, env)
    ended = time.time()
    if marks_from_files:
        splitfed_marks(out)
    m = json.loads((out / "marks.json").read_text())
    first, done, rounds = m["first_batch"], m["rounds_end"], m["rounds"]
    cpu = cpu_at(samples, done) - cpu_at(samples, first)
    return {
        "s_per_round": (done - first) / rounds,
        "cpu_per_round": cpu / rounds,
        "busy_cores": cpu / (done - first),
        "peak_pss_mb": max(s[2] for s in samples),
        "startup_s": first - started,
        "command_s": ended - started,
        "accuracy": m["accuracy"],
        "load_1min": load,
    }


def splitfed_cmd(args: argparse.Namespace, data: Path, out: Path, precision: str, exe: str = SPLITFED) -> list[str]:
    return [
        exe,
        "run",
        "sflv1",
        "--clients",
        "2",
        "--epochs",
        str(args.epochs),
        "--data",
        str(data),
        "--augment",
        "none",
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
        "--precision",
        precision,
        "--model",
        args.model,
        "--device",
        args.device,
        "--checkpoint-every",
        "0",
        "--out",
        str(out),
    ]


def splitfed_marks(out: Path) -> None:
    """The marks of a splitfed run, from its files: the rounds end when the last metrics line is written."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    done = (out / "metrics.jsonl").stat().st_mtime
    first = done - sum(r["wall_seconds"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    marks = {"first_batch": first, "rounds_end": done, "rounds": len(rows), "accuracy": summary["test_accuracy"]}
    (out / "marks.json").write_text(json.dumps(marks))


def summarise(results: dict[str, list[dict[str, float]]]) -> str:
    keys = [
        ("s_per_round", "s/round", 2),
        ("cpu_per_round", "CPU s/round (all processes)", 2),
        ("busy_cores", "busy cores during rounds", 2),
        ("peak_pss_mb", "peak summed PSS, MB", 0),
        ("startup_s", "start-up to first batch, s", 1),
        ("command_s", "whole command, s", 1),
        ("accuracy", "final test accuracy", 3),
        ("load_1min", "machine load (1-min average) at the start", 1),
    ]
    names = list(results)
    lines = ["| median (min-max) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label, digits in keys:
        cells = []
        for name in names:
            vals = [r[key] for r in results[name]]
            cells.append(f"{statistics.median(vals):.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    base = "reference loop"
    for name in names[1:]:
        ratio = statistics.median(r["s_per_round"] for r in results[name]) / statistics.median(
            r["s_per_round"] for r in results[base]
        )
        lines.append(f"\n{name} / {base}, s/round: {ratio:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="rounds per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=98, help="proxy images per digit (98: 980 images)")
    parser.add_argument("--size", default="64x128", help="HEIGHTxWIDTH of the proxy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precisions", default="32,bf16-mixed", help="splitfed --precision values to run")
    parser.add_argument("--model", default="auto", help="--model for both sides (auto: mobilenet at 64x128)")
    parser.add_argument("--device", default="cpu", help="--device for both sides: cpu or cuda")
    parser.add_argument(
        "--launchers",
        default="zygote",
        help="how splitfed starts its parties: zygote (forked from one preloading process, the default), "
        "processes (a new interpreter each, SPLITFED_NO_ZYGOTE=1, as before the zygote); comma-separated",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another splitfed checkout (e.g. `git worktree add --detach /tmp/before main`) whose sflv1 runs "
        "alternate with this one's, at the first of --precisions",
    )
    parser.add_argument("--out", type=Path, default=Path("bench") / f"peer-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    # Every run starts from the output folder: a checkout's own folder first on sys.path would let a
    # --baseline tree's zygote (python -c) import this checkout's splitfed.
    os.chdir(args.out)

    from proxy_quality import make_proxy

    height, width = (int(v) for v in args.size.lower().split("x"))
    data = make_proxy(args.out.parent / "proxy-data", per_class=args.per_class, size=(height, width), seed=1234)
    results: dict[str, list[dict[str, float]]] = {"reference loop": []}
    for repeat in range(args.repeats):
        out = args.out / f"reference-{repeat}"
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(REPO / "benchmarks" / "peer_loop.py"), "--data", str(data), "--out", str(out)]
        cmd += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
        cmd += ["--model", args.model, "--device", args.device]
        results["reference loop"].append(measure(cmd, out))
        print("reference", results["reference loop"][-1], flush=True)
        for precision in args.precisions.split(","):
            for launcher in args.launchers.split(","):
                out = args.out / f"splitfed-{precision}-{launcher}-{repeat}"
                name = f"splitfed sflv1 --precision {precision}" + ("" if launcher == "zygote" else f" ({launcher})")
                env = {**os.environ, "SPLITFED_NO_ZYGOTE": "1" if launcher == "processes" else "0"}
                results.setdefault(name, []).append(measure(splitfed_cmd(args, data, out, precision), out, True, env))
                print(name, results[name][-1], flush=True)
        if args.baseline is not None:
            from startup import tree_env, tree_exe

            precision, out = args.precisions.split(",")[0], args.out / f"baseline-{repeat}"
            name = f"baseline sflv1 --precision {precision}"
            exe = tree_exe(args.baseline, SPLITFED)  # its own environment where it has one (its own entry points)
            env = dict(os.environ) if exe != SPLITFED else tree_env(args.out, args.baseline)
            cmd = splitfed_cmd(args, data, out, precision, exe)
            results.setdefault(name, []).append(measure(cmd, out, True, env))
            print(name, results[name][-1], flush=True)
        table = summarise(results)  # after every repeat, so that a stopped benchmark still leaves its table
        (args.out / "results.md").write_text(table + "\n")
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)


if __name__ == "__main__":
    main()
