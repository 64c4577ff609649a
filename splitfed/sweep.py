"""``splitfed bench --clients 2 5 10``: every protocol at every client count, on the same data and seeds.

Each count is one ordinary ``splitfed bench`` in ``clients-N/`` (its own results and run
folders). The sweep adds, in the top folder:

* ``results.csv``: one row per (clients, protocol), the bench's columns;
* ``results.md``: test accuracy, macro-F1, s/round and MB per round (up + down), one row per
  protocol and one column per client count;
* ``clients.png``: the same four figures against the number of clients, one line per protocol.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from splitfed.bench import COLUMNS, bench
from splitfed.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: (column, label, format) of the figures against the number of clients
FIGURES = (
    ("test_accuracy", "test accuracy", "{:.3f}"),
    ("test_macro_f1", "test macro-F1", "{:.3f}"),
    ("seconds_per_epoch", "s / round", "{:.2f}"),
    ("mb_per_epoch", "MB / round (up + down)", "{:.1f}"),
)


def sweep_clients(
    protocols: list[str], counts: list[int], common: list[str], seeds: list[int], out: Path, timeout: float = 3600
) -> list[dict[str, Any]]:
    """Bench every protocol at every client count (``common`` without ``--clients``); return the rows."""
    rows: list[dict[str, Any]] = []
    for n in counts:
        log.info("=== %d clients ===", n)
        for row in bench(protocols, ["--clients", str(n), *common], seeds, out / f"clients-{n}", timeout):
            up, down = row["mb_up_per_epoch"], row["mb_down_per_epoch"]
            rows.append({"clients": n, **row, "mb_per_epoch": None if up is None else up + down})
    write_sweep(rows, counts, out)
    plot_sweep(rows, out)
    return rows


def write_sweep(rows: list[dict[str, Any]], counts: list[int], out: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["clients", *COLUMNS, "mb_per_epoch"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    by = {(r["protocol"], r["clients"]): r for r in rows}
    lines = []
    for key, label, fmt in FIGURES:
        lines += [f"### {label}", "", "| protocol | " + " | ".join(f"{n} clients" for n in counts) + " |"]
        lines.append("|---|" + "---|" * len(counts))
        for p in protocols:
            cells = [by.get((p, n), {}).get(key) for n in counts]
            lines.append(f"| {p} | " + " | ".join("failed" if v is None else fmt.format(v) for v in cells) + " |")
        lines.append("")
    atomic_write_bytes(out / "results.md", "\n".join(lines).encode())


def plot_sweep(rows: list[dict[str, Any]], out: Path) -> None:
    """Four panels against the number of clients, one line (with markers) per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from splitfed.plots import save_figure

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    counts = sorted({r["clients"] for r in rows})
    for ax, (key, label, _) in zip(axes.flat, FIGURES, strict=True):
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            points = [(r["clients"], r[key]) for r in rows if r["protocol"] == protocol and r[key] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=protocol)
        ax.set_xlabel("clients")
        ax.set_ylabel(label)
        ax.set_xticks(counts)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=9)
    fig.suptitle("protocols against the number of clients")
    fig.tight_layout()
    save_figure(fig, out / "clients.png")
