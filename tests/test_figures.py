"""One set of figures: the progress lines, the final line and summary.json agree (issue 13, part 2)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from splitfed.cli import final_line
from splitfed.config import RunConfig
from splitfed.testing import run_in_threads


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _progress_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"sflv1 round \d+/\d+", line)]


def test_progress_final_line_and_summary_report_the_same_seconds_per_round(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = RunConfig(protocol="sflv1", clients=2, epochs=3, seed=1, timeout=30)
    summary = json.loads(run_in_threads(config, tmp_path, progress=True).read_text())
    rows, lines = _rows(tmp_path), _progress_lines(capsys.readouterr().err)
    # defined once: the mean wall time of a round (training and evaluation), and of its training part
    assert summary["seconds_per_round"] == pytest.approx(sum(r["wall_seconds"] for r in rows) / 3)
    assert summary["train_seconds_per_round"] == pytest.approx(sum(r["train_seconds"] for r in rows) / 3)
    assert all(0 < r["train_seconds"] < r["wall_seconds"] for r in rows)
    assert summary["seconds_per_epoch"] == summary["seconds_per_round"]  # an epoch is a round
    last = lines[-1]
    assert last.startswith("sflv1 round 3/3") and f"s/round {summary['seconds_per_round']:.2f}" in last
    for key in ("test_loss", "test_macro_f1", "test_accuracy"):  # the bar shows test loss and macro-F1 too
        assert f"{key} {summary[key]:.4f}" in last
    line = final_line(summary)
    assert f"{summary['seconds_per_round']:.2f} s/round ({summary['train_seconds_per_round']:.2f} s training)" in line
    assert f"macro-F1 {summary['test_macro_f1']:.4f}" in line


def test_a_resumed_run_counts_its_rounds_to_the_new_total(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = RunConfig(protocol="sflv1", clients=2, epochs=2, seed=1, timeout=30)
    run_in_threads(config, tmp_path, progress=True)
    assert [line.split()[2] for line in _progress_lines(capsys.readouterr().err)] == ["1/2", "2/2"]
    summary = json.loads(run_in_threads(config.replace(epochs=4), tmp_path, resume=True, progress=True).read_text())
    assert [line.split()[2] for line in _progress_lines(capsys.readouterr().err)] == ["3/4", "4/4"]
    # the seconds per round span the whole run's rounds, as metrics.jsonl does
    assert summary["seconds_per_round"] == pytest.approx(sum(r["wall_seconds"] for r in _rows(tmp_path)) / 4)
