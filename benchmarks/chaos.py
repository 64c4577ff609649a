"""Chaos benchmark: the same seeded run with and without clients killed, frozen and restarted.

    python benchmarks/chaos.py [--protocols sflv1 sflv2 fedavg sl] [--clients 8] [--rounds 30]
                               [--per-round 6] [--min-clients 4] [--share 0.33] [--seed 0] [--out DIR]

For each protocol: one fault-free run, then one run where the harness (``splitfed.faults``)
kills (SIGKILL) or freezes (SIGSTOP) a random client at the start of about ``--share`` of the
rounds and starts it again two rounds later, all real processes over tcp. Prints a Markdown
table: final test accuracy of both, the difference, rounds completed, rounds that lost a
client, rejoins, and s/round. Not a test: the tests assert the behaviour; this gives the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from splitfed.faults import Federation, schedule


def one_run(protocol: str, args: argparse.Namespace, out: Path, faulty: bool) -> dict:
    flags = ["--epochs", str(args.rounds), "--clients-per-round", str(args.per_round)]
    flags += ["--min-clients", str(args.min_clients), "--timeout", str(args.timeout), "--seed", str(args.seed)]
    fed = Federation([sys.executable, "-m", "splitfed"], protocol, args.clients, out, flags, client_timeout=60)
    faults = schedule(args.clients, args.rounds, share=args.share, seed=args.seed) if faulty else []
    t0 = time.monotonic()
    rc = fed.run(faults, deadline=args.deadline)
    rows, summary = fed.metrics(), fed.summary()
    return {
        "rc": rc,
        "status": summary["status"],
        "rounds": summary["rounds_done"],
        "accuracy": summary["test_accuracy"],
        "lost_rounds": sum(1 for r in rows if r.get("lost")),
        "rejoins": sum(len(r.get("joined", [])) for r in rows),
        "recorded": all("participants" in r for r in rows),
        "s_per_round": statistics.median(r["wall_seconds"] for r in rows) if rows else None,
        "wall": time.monotonic() - t0,
        "faults": len(faults),
        "events": fed.events,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocols", nargs="+", default=["sflv1", "sflv2", "fedavg", "sl"])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--per-round", type=int, default=6)
    p.add_argument("--min-clients", type=int, default=4)
    p.add_argument("--share", type=float, default=0.4, help="chance of a fault in each round from 2 on (default 0.4)")
    p.add_argument("--timeout", type=float, default=15.0, help="--timeout of the runs (default 15 s)")
    p.add_argument(
        "--only",
        choices=("clean", "faults"),
        default=None,
        help="only the fault-free or only the faulty runs: start both at once, in two commands, to compare them "
        "side by side under the same load (no table then: each prints its JSON lines)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deadline", type=float, default=3600.0, help="seconds before a run counts as hung")
    p.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="splitfed-chaos-"))
    results = {}
    for protocol in args.protocols:
        for faulty in [f for f in (False, True) if args.only in (None, "faults" if f else "clean")]:
            res = one_run(protocol, args, root / f"{protocol}-{'faults' if faulty else 'clean'}", faulty)
            results[(protocol, faulty)] = res
            print(json.dumps({"protocol": protocol, "faults": faulty, **res}), flush=True)
    if args.only:
        return
    print(
        f"\n{args.clients} clients, {args.rounds} rounds, --clients-per-round {args.per_round} "
        f"--min-clients {args.min_clients}, faults in ~{args.share:.0%} of rounds; runs in {root}\n"
    )
    print(
        "| protocol | accuracy, fault-free | accuracy, faults | difference | rounds done | rounds with a loss "
        "| rejoins | s/round fault-free | s/round faults |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for protocol in args.protocols:
        a, b = results[(protocol, False)], results[(protocol, True)]
        diff = (
            (b["accuracy"] - a["accuracy"]) * 100 if a["accuracy"] is not None and b["accuracy"] is not None else None
        )
        print(
            f"| {protocol} | {_pct(a['accuracy'])} | {_pct(b['accuracy'])} | "
            f"{'' if diff is None else f'{diff:+.1f} pt'} | {b['rounds']}/{args.rounds} ({b['status']}) | "
            f"{b['lost_rounds']} | {b['rejoins']} | {a['s_per_round']:.2f} | {b['s_per_round']:.2f} |"
        )


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f} %"


if __name__ == "__main__":
    main()
