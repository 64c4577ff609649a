"""`splitfed evaluate RUN`: the model rebuilt from a run folder scores what the run reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from splitfed.config import RunConfig
from splitfed.errors import ConfigError, DataError
from splitfed.evaluate import evaluate_run
from splitfed.testing import run_in_threads


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2", "sl", "fedavg", "centralized", "fedsl"])
def test_the_rebuilt_model_scores_exactly_what_the_run_reported(protocol: str, tmp_path: Path) -> None:
    config = RunConfig(protocol=protocol, clients=2 if protocol != "centralized" else 1, epochs=2, timeout=30, seed=5)
    summary = json.loads(run_in_threads(config, tmp_path / "run").read_text())
    report = evaluate_run(tmp_path / "run")
    assert report["rows"] == sum(map(sum, summary["confusion"]))  # every held-out row, once
    assert report["accuracy"] == summary["test_accuracy"]
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert report["confusion"] == summary["confusion"]
    assert (tmp_path / "run" / "evaluation" / "confusion.png").stat().st_size > 1000
    recall = {name: row["recall"] for name, row in report["per_class"].items()}
    assert sum(row["support"] for row in report["per_class"].values()) == report["rows"]
    assert 0 <= min(recall.values()) <= max(recall.values()) <= 1


def test_pyvertical_and_foreign_data_are_refused_with_the_reason(tmp_path: Path) -> None:
    run_in_threads(RunConfig(protocol="pyvertical", clients=2, epochs=1, timeout=30), tmp_path / "pv")
    with pytest.raises(ConfigError, match="each feature band's head stays with its owner"):
        evaluate_run(tmp_path / "pv")
    run_in_threads(RunConfig(protocol="fedavg", clients=2, epochs=1, timeout=30), tmp_path / "fa")
    table = Path(__file__).resolve().parents[1] / "examples" / "tabular.py"
    with pytest.raises(DataError, match=r"shape \(30,\); the run was trained on \(1, 8, 8\)"):
        evaluate_run(tmp_path / "fa", data=f"{table}:breast_cancer")
    with pytest.raises(ConfigError, match="not a run folder"):
        evaluate_run(tmp_path)


def test_the_command_prints_a_table_and_writes_json(splitfed_cmd, tmp_path: Path) -> None:
    run_in_threads(RunConfig(protocol="sflv1", clients=2, epochs=1, timeout=30), tmp_path / "run")
    res = subprocess.run(
        [*splitfed_cmd, "evaluate", str(tmp_path / "run"), "--data", "digits", "--out", str(tmp_path / "ev")],
        capture_output=True,
        text=True,
        timeout=300,  # a stall guard, not a speed check: a loaded machine took over 120 s
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "ev" / "evaluation.json")
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["rows"] == 1797 and "precision" in res.stderr and "digits (all rows)" in res.stderr


@pytest.mark.parametrize(
    "meta",
    [
        {"correct": 1, "count": 2},  # no loss
        {"loss_sum": "x", "correct": 1, "count": 2},
        {"loss_sum": 1.0, "correct": 3, "count": 2},  # more right than seen
        {"loss_sum": 1.0, "correct": 1, "count": 2, "confusion": [[1, 0], [0, 1]]},  # not 3x3
    ],
)
def test_a_malformed_metrics_report_is_a_protocol_error(meta: dict) -> None:
    from splitfed.errors import ProtocolError
    from splitfed.metrics import Tally

    tally = Tally(3)
    with pytest.raises(ProtocolError, match="metrics report"):
        tally.add_meta(meta)
    assert tally.count == 0  # nothing half-merged
    tally.add_meta({"loss_sum": 1.0, "correct": 1, "count": 2, "confusion": [[1, 0, 0], [1, 0, 0], [0, 0, 0]]})
    assert (tally.count, tally.correct) == (2, 1)
