"""`splitfed bench`: one row per protocol, consistent with each run; a failing protocol keeps the others."""

from __future__ import annotations

import csv
import json
import logging
import subprocess
from pathlib import Path

import pytest

from splitfed import bench


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


def _fake_run(protocol: str, seed: int, folder: Path, common: list[str], timeout: float) -> bench.BenchRun:
    """A finished run without running anything: fedsl fails, the others reach 0.5 accuracy."""
    if protocol == "fedsl":
        return bench.BenchRun(protocol, seed, folder, error="error: boom")
    summary = {
        "test_accuracy": 0.5,
        "test_macro_f1": 0.4,
        "test_loss": 1.0,
        "train_accuracy": 0.6,
        "seconds_per_epoch": 1.0,
        "bytes_sent": 2e6,
        "bytes_received": 1e6,
        "epochs": 1,
    }
    return bench.BenchRun(protocol, seed, folder, summary, rows=[{"test_accuracy": 0.5, "test_loss": 1.0}])


def test_bench_reports_progress_through_logging_not_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    """Library code logs; only the CLI prints. Each run is announced as it starts and as it ends."""
    monkeypatch.setattr(bench, "run_one", _fake_run)
    with caplog.at_level(logging.INFO, logger="splitfed.bench"):
        rows = bench.bench(["sflv1", "fedsl"], [], [0, 1], tmp_path)
    assert [r["runs_ok"] for r in rows] == ["2/2", "0/2"]
    messages = [r.getMessage() for r in caplog.records if r.name == "splitfed.bench"]
    assert messages[0] == "[1/4] sflv1 seed 0 ..."
    assert messages[1].startswith("[1/4] sflv1 seed 0: test accuracy 0.5000 (")
    assert messages[-1].startswith("[4/4] fedsl seed 1: error: boom (")
    assert len(messages) == 8
    assert capsys.readouterr() == ("", "")
