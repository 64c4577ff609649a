"""FedSL: gradients equal a centralised 2-stage RNN; averaging never mixes positions; it learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from splitfed.protocols import fedsl

from splitfed.config import RunConfig
from splitfed.data.datasets import load_index
from splitfed.data.shards import batch_order, client_rows
from splitfed.errors import ConfigError
from splitfed.models.rnn import build_segments, segment_bounds, to_sequence
from splitfed.testing import run_in_threads


@pytest.mark.parametrize(("cell", "encoder"), [("rnn", "none"), ("gru", "none"), ("lstm", "none"), ("gru", "conv")])
def test_gradients_equal_a_centralised_two_stage_rnn(cell: str, encoder: str, tmp_path: Path) -> None:
    # One round, one batch holding every training row, SGD with lr 1: the weight change is -gradient.
    config = RunConfig(
        protocol="fedsl",
        clients=2,
        epochs=1,
        batch_size=4096,
        lr=1.0,
        optimizer="sgd",
        momentum=0.0,
        seed=4,
        timeout=30,
        options={"cell": cell, "segments": 2, "sequence": "rows", "hidden": 16, "encoder": encoder},
    )
    run_in_threads(config, tmp_path)
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["segments"]

    index = load_index("digits")
    train, _ = client_rows(index, 1, 0, "iid", "random", 0.2, config.seed)
    x, y = index.load(train)
    seq = to_sequence(x, "rows")
    (a0, b0), (a1, b1) = segment_bounds(seq.shape[1], 2)
    subnets, head = build_segments(cell, seq.shape[2], 16, 10, 2, config.seed, encoder=encoder, channels=1)
    before = [{k: v.clone() for k, v in s.state_dict().items()} for s in subnets]
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    (rows,) = batch_order(len(y), 4096, seed=config.seed, client=0, round=1, epoch=0)
    state = subnets[0](seq[rows, a0:b0], subnets[0].zero_state(len(rows)))
    state = subnets[1](seq[rows, a1:b1], state)
    F.cross_entropy(head(state[0][-1]), y[rows]).backward()

    for pos, net in enumerate(subnets):
        for name, p in net.named_parameters():
            delta = after[pos][name] - before[pos][name]
            assert torch.allclose(delta, -p.grad, atol=1e-6), (cell, pos, name)
    for name, p in head.named_parameters():
        assert torch.allclose(after[1][f"head.{name}"] - head_before[name], -p.grad, atol=1e-6), name
    assert float(subnets[0].rnn.weight_ih_l0.grad.abs().max()) > 1e-4  # the first segment really got a gradient
    if encoder == "conv":
        assert float(subnets[0].encoder[1].weight.grad.abs().max()) > 1e-6  # ... down to its step encoder


def test_averaging_is_per_position() -> None:
    entries = [
        (0, {"w": torch.tensor([1.0])}, 1.0),
        (1, {"w": torch.tensor([100.0])}, 1.0),
        (0, {"w": torch.tensor([3.0])}, 3.0),
        (1, {"w": torch.tensor([200.0])}, 1.0),
    ]
    avg = fedsl.average_by_position(entries)
    assert float(avg[0]["w"]) == pytest.approx(2.5) and float(avg[1]["w"]) == pytest.approx(150.0)


def test_layout_rules() -> None:
    assert fedsl.layout(4, 2) == 2
    with pytest.raises(ConfigError, match="not a multiple"):
        fedsl.layout(3, 2)
    with pytest.raises(ConfigError, match="at least 2"):
        fedsl.layout(2, 1)


def test_two_client_processes_learn(run_protocol) -> None:
    summary, out = run_protocol("fedsl", "--clients", "2", "--epochs", "4", "--cell", "gru")
    assert summary["test_accuracy"] > 0.8, summary  # chance is 0.1
    config = json.loads((out / "config.json").read_text())
    assert {v["position"] for v in config["client_data"].values()} == {0, 1}
