"""How the protocols scale with the number of clients, on the same total data.

Each protocol runs as real processes (``splitfed run``) at every client count on the
built-in digits: the same 1,797 rows, split among more clients. Per run it reports the
seconds per round (summary.json's definition: training and evaluation, not start-up),
the bytes per round, the peak resident memory of the largest process, the peak PSS summed
over all the run's processes (sampled from /proc every 0.2 s), and the accuracy; then the
ratio of seconds per round to the smallest client count, and a plot.

    python benchmarks/scale.py [--protocols sflv1 sflv2 fedavg] [--clients 2 4 8 16] [--epochs 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peer_speed's /proc sampling


def run(protocol: str, clients: int, epochs: int, out: Path, batch_size: int) -> dict:
    """One ``splitfed run``; its summary.json, with the peak PSS summed over its processes (``peak_pss_mb``)."""
    from peer_speed import cpu_and_pss, tree

    cmd = [sys.executable, "-m", "splitfed", "run", protocol, "--clients", str(clients), "--epochs", str(epochs)]
    cmd += ["--batch-size", str(batch_size), "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, cpu_and_pss(tree(proc.pid))[1])
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
    return {**json.loads((out / "summary.json").read_text()), "peak_pss_mb": peak}


def plot(results: dict[str, dict[int, dict]], path: Path) -> None:
    from splitfed.plots import new_figure, save_figure

    plt = new_figure()
    fig, (ax_s, ax_b, ax_m) = plt.subplots(1, 3, figsize=(15, 4))
    for k, (protocol, by_clients) in enumerate(results.items()):
        n = sorted(by_clients)
        style = {"marker": "osD^v"[k % 5], "label": protocol}
        ax_s.plot(n, [by_clients[c]["seconds_per_round"] for c in n], **style)
        ax_b.plot(n, [by_clients[c]["bytes_sent"] / by_clients[c]["epochs"] / 1e6 for c in n], **style)
        ax_m.plot(n, [by_clients[c]["peak_pss_mb"] / 1024 for c in n], **style)
    ax_s.set(xlabel="clients", ylabel="seconds per round", title="seconds per round (same total data)", xscale="log")
    ax_b.set(xlabel="clients", ylabel="MB up per round", title="bytes up per round", xscale="log")
    ax_m.set(xlabel="clients", ylabel="GB", title="peak PSS summed over the run's processes", xscale="log")
    for ax in (ax_s, ax_b, ax_m):
        ax.set_xticks(sorted({c for r in results.values() for c in r}))
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="+", default=["sflv1", "sflv2", "fedavg"], help="(default %(default)s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 4, 8, 16], help="(default %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="rounds per run (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where scale.png and results.json go (default: a temporary folder)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="splitfed-scale-"))
    results: dict[str, dict[int, dict]] = {}
    print(
        "| protocol | clients | s/round | ratio to the fewest | MB up/round | peak MB, largest process "
        "| peak summed PSS, MB | test accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for protocol in args.protocols:
        for clients in args.clients:
            s = run(protocol, clients, args.epochs, work / f"{protocol}-{clients}", args.batch_size)
            results.setdefault(protocol, {})[clients] = s
            base = results[protocol][min(results[protocol])]["seconds_per_round"]
            print(
                f"| {protocol} | {clients} | {s['seconds_per_round']:.2f} | {s['seconds_per_round'] / base:.2f} "
                f"| {s['bytes_sent'] / s['epochs'] / 1e6:.2f} | {s.get('peak_memory_mb', 0):.0f} "
                f"| {s['peak_pss_mb']:.0f} | {s['test_accuracy']:.4f} |",
                flush=True,
            )
    out = args.out or work
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    plot(results, out / "scale.png")
    print(out / "scale.png")
    if args.out is None:
        shutil.rmtree(work / "runs", ignore_errors=True)


if __name__ == "__main__":
    main()
