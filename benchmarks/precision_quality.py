"""Does --precision bf16-mixed learn as well as float32? Every protocol, several seeds, on the proxy or --data.

The proxy is benchmarks/proxy_quality.py's (digits drawn into noisy 32x64 canvases, offline).
Runs go through ``splitfed.run(in_process=True)``. Prints, per protocol and precision, the
final test accuracy and loss per seed, their mean and spread, and the bf16 - fp32 difference
of the means beside the seeds' spread (the noise it has to be compared with).

    python benchmarks/precision_quality.py --epochs 12 --seeds 0,1,2 --out bench/precision
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

PROTOCOLS = ("sflv1", "sflv2", "sl", "fedavg", "centralized", "fedsl", "pyvertical")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--size", default="32x64")
    parser.add_argument("--data", default="proxy", help="proxy (built offline), or any --data of splitfed run")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--out", type=Path, default=Path("bench") / f"precision-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()

    from proxy_quality import make_proxy

    import splitfed

    height, width = (int(v) for v in args.size.lower().split("x"))
    if args.data == "proxy":
        data = make_proxy(args.out.parent / "proxy-data", per_class=args.per_class, size=(height, width), seed=1234)
    else:
        data = args.data
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[dict]]] = {}
    for protocol in args.protocols.split(","):
        for seed in seeds:
            for precision in ("32", "bf16-mixed"):  # alternating, so that load changes hit both alike
                started = time.monotonic()
                result = splitfed.run(
                    protocol,
                    clients=2,
                    epochs=args.epochs,
                    data=str(data),
                    seed=seed,
                    precision=precision,
                    augment="none",
                    in_process=True,
                    out=args.out / "runs" / f"{protocol}-{precision}-{seed}",
                )
                row = {
                    "seed": seed,
                    "test_accuracy": result.test_accuracy,
                    "test_loss": result.summary["test_loss"],
                    "seconds": time.monotonic() - started,
                }
                results.setdefault(protocol, {}).setdefault(precision, []).append(row)
                print(protocol, precision, row, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    table = summarise(results, args)
    (args.out / "results.md").write_text(table + "\n")
    print(table)


def summarise(results: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> str:
    lines = [
        (f"Proxy {args.size}, {args.per_class} per class" if args.data == "proxy" else f"Data {args.data}")
        + f", 2 clients, {args.epochs} rounds, seeds {args.seeds}: "
        "final test accuracy, mean ± standard deviation over the seeds (test loss in brackets).",
        "",
        "| protocol | float32 | bf16-mixed | bf16 − fp32 (accuracy) | s per run, fp32 / bf16 |",
        "|---|---|---|---|---|",
    ]
    for protocol, by in results.items():
        cells, means = [], []
        for precision in ("32", "bf16-mixed"):
            acc = [r["test_accuracy"] for r in by[precision]]
            loss = [r["test_loss"] for r in by[precision]]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            cells.append(f"{statistics.mean(acc):.3f} ± {sd:.3f} ({statistics.mean(loss):.3f})")
            means.append(statistics.mean(acc))
        secs = [statistics.median(r["seconds"] for r in by[p]) for p in ("32", "bf16-mixed")]
        lines.append(
            f"| {protocol} | {cells[0]} | {cells[1]} | {means[1] - means[0]:+.3f} | {secs[0]:.0f} / {secs[1]:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
