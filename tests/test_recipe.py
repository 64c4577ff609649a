"""The training recipe: --schedule/--warmup, --label-smoothing, --clip-grad, --weight-decay defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from splitfed.config import RunConfig
from splitfed.errors import ConfigError
from splitfed.optim import lr_at
from splitfed.testing import run_in_threads


def test_the_schedules_by_round() -> None:
    cosine = RunConfig(protocol="sflv1", epochs=5, lr=0.1, schedule="cosine", warmup=1)
    assert [round(lr_at(cosine, r), 6) for r in range(1, 6)] == [0.1, 0.1, 0.085355, 0.05, 0.014645]
    step = RunConfig(protocol="sflv1", epochs=8, lr=1.0, schedule="step")
    assert [lr_at(step, r) for r in range(1, 9)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    warm = RunConfig(protocol="sflv1", epochs=4, lr=0.2, warmup=2)
    assert [lr_at(warm, r) for r in range(1, 5)] == pytest.approx([0.1, 0.2, 0.2, 0.2])


def test_weight_decay_defaults_suit_the_optimizer_and_bad_values_are_refused() -> None:
    assert RunConfig(protocol="sflv1", optimizer="adamw").weight_decay == 0.01
    assert RunConfig(protocol="sflv1").weight_decay == 0.0
    assert RunConfig(protocol="sflv1", optimizer="adamw", weight_decay=0.0).weight_decay == 0.0
    for bad in ({"schedule": "linear"}, {"label_smoothing": 1.0}, {"clip_grad": -1.0}, {"warmup": 30}):
        with pytest.raises(ConfigError):
            RunConfig(protocol="sflv1", epochs=20, **bad)


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2", "fedsl", "pyvertical", "fedavg"])
def test_every_optimizer_of_a_run_follows_the_schedule(protocol: str, tmp_path: Path) -> None:
    """The server's and every client's optimizers end the run at the last round's learning rate."""
    config = RunConfig(protocol=protocol, clients=2, epochs=4, lr=0.01, schedule="step", timeout=30)
    run_in_threads(config, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    server = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    states = server.get("server_optimizers", []) + ([server["optimizer"]] if "optimizer" in server else [])
    for path in (tmp_path / "run" / "clients").iterdir():
        states.append(torch.load(path, weights_only=True)["state"]["optimizer"])
    assert len(states) >= 2
    assert [group["lr"] for state in states for group in state["param_groups"]] == pytest.approx([0.0001] * len(states))


def test_smoothing_and_the_schedule_keep_one_client_equal_to_centralised(tmp_path: Path) -> None:
    base = RunConfig(protocol="sflv1", clients=1, epochs=2, optimizer="sgd", lr=0.05, timeout=30)
    recipe = base.replace(label_smoothing=0.1, schedule="cosine", warmup=1)
    plain = json.loads(run_in_threads(base, tmp_path / "plain").read_text())
    split = json.loads(run_in_threads(recipe, tmp_path / "split").read_text())
    central = json.loads(run_in_threads(recipe.replace(protocol="centralized"), tmp_path / "central").read_text())
    assert abs(split["train_loss"] - plain["train_loss"]) > 1e-3
    assert split["train_loss"] == pytest.approx(central["train_loss"], abs=1e-5)
    assert split["test_loss"] == pytest.approx(central["test_loss"], abs=1e-5)


def test_clipping_bounds_every_step_of_every_half(tmp_path: Path) -> None:
    """Plain SGD with lr 1 and --clip-grad c moves each half by at most c per step."""
    from splitfed.data.shards import client_shard
    from splitfed.models import build_model, split_model

    clip = 1e-3
    steps = max(-(-len(client_shard("digits", clients=2, client=i).train_y) // 256) for i in range(2))
    config = RunConfig(
        protocol="sflv1",
        clients=2,
        epochs=1,
        optimizer="sgd",
        momentum=0.0,
        lr=1.0,
        clip_grad=clip,
        batch_size=256,
        timeout=30,
    )
    run_in_threads(config, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    facts = json.loads((tmp_path / "run" / "config.json").read_text())
    client, server = split_model(build_model("cnn", (1, 8, 8), 10, config.seed), facts["cut"])
    for half, trained in ((client, saved["client_half"]), (server, saved["server_half"])):
        moved = torch.cat([(trained[k] - v).flatten() for k, v in half.state_dict().items()]).norm()
        assert 0 < moved <= steps * clip * 1.0001  # averaged over clients, still within the bound
