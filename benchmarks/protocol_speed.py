"""PSI seconds at scale, and seconds per epoch of each protocol on the same data.

    python benchmarks/protocol_speed.py [--epochs 5] [--psi-sizes 10000 100000]

Each protocol runs as a real multi-process `splitfed run` with 2 clients, one after the
other in this one invocation (this machine is shared and noisy: compare within a run).
Not a test: the figures go into the issue notes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from splitfed.protocols import psi

from splitfed.bench import run_one


def psi_seconds(n: int, overlap: float = 0.5) -> tuple[float, int, int]:
    holder_ids = [f"sample-{i:07d}" for i in range(n)]
    owner_ids = [f"sample-{i:07d}" for i in range(int(n * (1 - overlap)), int(n * (2 - overlap)))]
    t0 = time.perf_counter()
    holder = psi.LabelHolder(holder_ids)
    setup, response = psi.owner_answer(owner_ids, holder.request, len(holder.ids))
    common = holder.common_with(setup, response)
    return time.perf_counter() - t0, len(common), len(holder.request) + len(setup) + len(response)


def epoch_seconds(protocol: str, epochs: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--clients", "2", "--epochs", str(epochs), "--checkpoint-every", "0", *extra]
        run = run_one(protocol, 0, Path(tmp) / "run", common, timeout=3600)
        if run.summary is None:
            raise SystemExit(f"{protocol} failed: {run.error}")
        return run.summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--psi-sizes", type=int, nargs="*", default=[10_000, 100_000])
    args = p.parse_args()
    for n in args.psi_sizes:
        secs, common, nbytes = psi_seconds(n)
        print(f"PSI {n:>7d} ids per side: {secs:6.2f} s, {common} common, {nbytes / 1e6:.1f} MB exchanged")
    runs = [("sflv1", []), ("sflv2", []), ("fedsl", ["--cell", "gru"]), ("pyvertical", [])]
    print(f"\n{'protocol':12s} {'s/epoch':>8s} {'test acc':>9s} {'MB up/epoch':>12s}")
    for name, extra in runs:
        s = epoch_seconds(name, args.epochs, extra)
        print(
            f"{name:12s} {s['seconds_per_epoch']:8.3f} {s['test_accuracy']:9.4f} "
            f"{s['bytes_sent'] / args.epochs / 1e6:12.2f}"
        )


if __name__ == "__main__":
    main()
