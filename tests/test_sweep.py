"""`splitfed bench --clients 2 3`: every protocol at every client count, tabled and plotted against the count."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path


def test_bench_sweeps_client_counts(splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    res = subprocess.run(
        [*splitfed_cmd, "bench", "--protocols", "fedavg,sflv1", "--clients", "2", "3", "--epochs", "1"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["clients"], r["protocol"]) for r in rows] == [
        ("2", "fedavg"),
        ("2", "sflv1"),
        ("3", "fedavg"),
        ("3", "sflv1"),
    ]
    for r in rows:  # each point is a real run with that many clients
        summary = (out / f"clients-{r['clients']}" / "runs" / f"{r['protocol']}-seed0" / "summary.json").read_text()
        assert f'"clients": {r["clients"]}' in summary and float(r["test_accuracy"]) > 0.3
    table = (out / "results.md").read_text()
    assert "| protocol | 2 clients | 3 clients |" in table and table.count("| sflv1 |") == 4  # four figures
    assert (out / "clients.png").stat().st_size > 10_000
