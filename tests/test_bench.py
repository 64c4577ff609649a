"""`splitfed bench`: one row per protocol, consistent with each run; a failing protocol keeps the others."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path


def test_bench_table_matches_the_runs_and_survives_a_failure(splitfed_cmd, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    # fedsl needs --clients to be a multiple of --segments (2): with 3 clients it must fail, alone.
    res = subprocess.run(
        [
            *splitfed_cmd,
            "bench",
            "--protocols",
            "sflv1,fedavg,fedsl",
            "--clients",
            "3",
            "--epochs",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out / "results.md")
    assert "[3/3] fedsl seed 0" in res.stderr  # progress names each run
    rows = {r["protocol"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == ["sflv1", "fedavg", "fedsl"]
    assert rows["fedsl"]["runs_ok"] == "0/1" and "multiple of --segments" in rows["fedsl"]["error"]
    for protocol in ("sflv1", "fedavg"):
        summary = json.loads((out / "runs" / f"{protocol}-seed0" / "summary.json").read_text())
        row = rows[protocol]
        assert row["runs_ok"] == "1/1" and row["error"] == ""
        assert float(row["test_accuracy"]) == summary["test_accuracy"]
        assert float(row["test_loss"]) == summary["test_loss"]
        assert float(row["mb_up_per_epoch"]) == summary["bytes_sent"] / 2 / 1e6
        assert float(row["peak_memory_mb"]) > 50
        assert (out / f"confusion_{protocol}.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| sflv1 |" in table and "| fedsl | failed:" in table
    assert (out / "curves.png").stat().st_size > 1000
