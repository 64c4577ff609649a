"""The label attack can fail: it reads labels from the gradients a label-private client returns,
not from gradients that carry none, and `splitfed attack RUN --labels` reports it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from splitfed.config import RunConfig
from splitfed.data.shards import client_shard
from splitfed.label_attack import head_input_gradients, infer_labels, matched_accuracy
from splitfed.models import build_model, split_three
from splitfed.testing import run_in_threads


def test_matching_names_clusters_one_to_one() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert matched_accuracy(np.array([2, 2, 0, 0, 1, 1]), labels, 3) == 1.0  # any naming of perfect clusters
    assert matched_accuracy(np.array([0, 0, 0, 0, 0, 0]), labels, 3) == 1 / 3  # one cluster names one class


def test_the_returned_gradients_give_the_labels_away_and_noise_does_not() -> None:
    shard = client_shard("digits", clients=1, client=0, seed=5)
    x, y = shard.test_x[:256], shard.test_y[:256]
    front, middle, head = split_three(build_model("cnn", (1, 8, 8), 10, 5), 1, 1)
    grads = head_input_gradients(front, middle, head, x, y, batch=64)
    assert grads.shape == (256, 128 * 2 * 2)
    found = infer_labels(grads, y, 10)
    assert found.accuracy > 0.8 and found.chance == 0.1, found
    assert found.shuffled < 0.3  # the same clusters against labels they do not encode
    blind = infer_labels(torch.randn(grads.shape, generator=torch.Generator().manual_seed(0)), y, 10)
    assert blind.accuracy < 0.3, blind


def test_splitfed_attack_labels_reports_a_label_private_run(tmp_path: Path, capsys) -> None:
    from splitfed.cli import main

    private = tmp_path / "private"
    run_in_threads(RunConfig(protocol="sflv1", clients=1, epochs=1, seed=5, options={"labels": "client"}), private)
    assert main(["attack", str(private), "--labels", "--victims", "128"]) == 0
    assert capsys.readouterr().out.strip() == str(private / "attack" / "label_attack.json")
    report = json.loads((private / "attack" / "label_attack.json").read_text())
    assert report["labels"] == "client" and report["checkpoint"]["examples"] == 128
    assert report["first_round"]["accuracy"] > 0.5 > report["first_round"]["shuffled"]
    vanilla = tmp_path / "vanilla"
    run_in_threads(RunConfig(protocol="sflv1", clients=1, epochs=1, seed=5), vanilla)
    assert main(["attack", str(vanilla), "--labels"]) == 0
    assert "labels on the server" in capsys.readouterr().err
    assert main(["attack", str(vanilla), "--labels", "--aux", "digits"]) == 1
    assert "--aux" in capsys.readouterr().err


def test_the_label_attack_refuses_a_run_with_no_cut(tmp_path: Path, capsys) -> None:
    """FedAvg sends whole models: no activations, no returned gradients, nothing for the attack to read."""
    from splitfed.cli import main

    run_in_threads(RunConfig(protocol="fedavg", clients=2, epochs=1, seed=5), tmp_path / "fedavg")
    assert main(["attack", str(tmp_path / "fedavg"), "--labels"]) == 1
    assert "is a fedavg run: no activations" in capsys.readouterr().err
