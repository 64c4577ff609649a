"""--val-fraction, best.pt and --early-stop: the round is chosen on validation rows, never on test rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from splitfed import registry
from splitfed.checks import check_run
from splitfed.config import RunConfig
from splitfed.data.datasets import load_index
from splitfed.data.shards import client_rows, client_shard
from splitfed.errors import ConfigError
from splitfed.evaluate import evaluate_run
from splitfed.testing import run_in_threads


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_validation_rows_come_from_each_clients_training_rows_only() -> None:
    index = load_index("digits")
    features = {tuple(index.load([i])[0].flatten().tolist()): i for i in range(len(index))}
    for client in range(2):
        train, test = client_rows(index, 2, client, "iid", "random", 0.2, 7)
        shard = client_shard("digits", clients=2, client=client, seed=7, val_fraction=0.25)
        val = {features[tuple(x.flatten().tolist())] for x in shard.val_x}
        kept = {features[tuple(x.flatten().tolist())] for x in shard.train_x}
        assert val and val <= set(train.tolist()) and not val & set(test.tolist())  # never a test row
        assert not val & kept and val | kept == set(train.tolist())  # carved out, not copied
        assert abs(len(val) / len(train) - 0.25) < 0.03
        classes = np.unique(shard.val_y.numpy())
        assert len(classes) == 10  # stratified: every class is validated


@pytest.mark.parametrize("protocol", ["sflv1", "fedavg", "centralized"])
def test_best_pt_is_the_round_with_the_best_validation_accuracy(protocol: str, tmp_path: Path) -> None:
    config = RunConfig(
        protocol=protocol, clients=2 if protocol != "centralized" else 1, epochs=4, val_fraction=0.2, timeout=30
    )
    summary = json.loads(run_in_threads(config, tmp_path / "run").read_text())
    rows = _rows(tmp_path / "run" / "metrics.jsonl")
    val = [r["val_accuracy"] for r in rows]
    best = int(np.argmax(val)) + 1  # the first of equals
    assert summary["best_round"] == best and summary["best_val_accuracy"] == max(val)
    assert summary["test_accuracy_at_best"] == rows[best - 1]["test_accuracy"]
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert saved["round"] == best and saved["val_accuracy"] == max(val)
    report = evaluate_run(tmp_path / "run", checkpoint="best", out=tmp_path / "ev")
    assert report["round"] == best and report["accuracy"] == summary["test_accuracy_at_best"]
    assert all(r["val_accuracy"] is not None and r["test_accuracy"] is not None for r in rows)


def test_early_stop_ends_the_run_patience_rounds_after_the_best(tmp_path: Path) -> None:
    """With a learning rate too small to change anything, round 1 stays the best and the run stops at 1 + 2."""
    config = RunConfig(protocol="sflv1", clients=2, epochs=10, lr=1e-12, val_fraction=0.2, early_stop=2, timeout=30)
    summary = json.loads(run_in_threads(config, tmp_path / "run").read_text())
    assert summary["status"] == "completed" and summary["rounds_done"] == 3
    assert summary["best_round"] == 1 and summary["stopped_early_after_round"] == 3
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["round"] == 3


def test_bad_validation_settings_are_refused_before_start() -> None:
    with pytest.raises(ConfigError, match="--early-stop watches the validation accuracy"):
        RunConfig(protocol="sflv1", early_stop=3)
    with pytest.raises(ConfigError, match="--val-fraction must be in"):
        RunConfig(protocol="sflv1", val_fraction=1.0)
    with pytest.raises(ConfigError, match="fedsl does not validate yet"):
        check_run(RunConfig(protocol="fedsl", val_fraction=0.1), registry.get("fedsl"))


def test_a_resumed_run_keeps_the_best_round_it_had(tmp_path: Path) -> None:
    config = RunConfig(protocol="sflv1", clients=2, epochs=4, val_fraction=0.2, timeout=30, seed=2)
    straight = json.loads(run_in_threads(config, tmp_path / "straight").read_text())
    run_in_threads(config.replace(epochs=2), tmp_path / "resumed")
    resumed = json.loads(run_in_threads(config, tmp_path / "resumed", resume=True).read_text())
    for key in ("best_round", "best_val_accuracy", "test_accuracy_at_best", "test_accuracy"):
        assert resumed[key] == straight[key], key
