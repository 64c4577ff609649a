"""Resuming is exact for every protocol: N rounds + resume to 2N == 2N rounds straight, with Adam.

The parties run as threads (as in the equivalence tests); the multi-process path, with
`splitfed run --resume`, is tested in test_runs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from splitfed import registry
from splitfed.config import RunConfig
from splitfed.errors import ConfigError, RemoteError
from splitfed.testing import run_in_threads


def _summary(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("protocol", "labels"),
    [(name, "server") for name in registry.available()]
    + [("sflv1", "client"), ("sflv2", "client"), ("sflv1", "client, local heads, noised gradients")],
)
def test_two_rounds_and_a_resume_equal_four_rounds_straight(protocol: str, labels: str, tmp_path: Path) -> None:
    """Every protocol, and the label-private (U-shaped) SplitFed runs, whose clients keep a head too (with
    --heads local, one that only the client's own state file holds, and noise drawn per round)."""
    options = {"sflv2": {"order": "interleaved"}}.get(protocol, {})
    options = {**options, "labels": "client"} if labels.startswith("client") else options
    if "local" in labels:
        options = {**options, "heads": "local", "label_clip": 0.1, "label_noise": 0.3}
    config = RunConfig(protocol=protocol, clients=2, epochs=4, optimizer="adam", seed=3, timeout=30, options=options)
    straight = _summary(run_in_threads(config, tmp_path / "straight"))
    run_in_threads(config.replace(epochs=2), tmp_path / "resumed")
    resumed = _summary(run_in_threads(config, tmp_path / "resumed", resume=True))
    assert resumed["resumed_after_round"] == 2 and resumed["rounds_done"] == 4
    for key in ("train_loss", "test_loss"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-6), key
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_without_its_optimizer_state_a_resumed_run_drifts(tmp_path: Path) -> None:
    """The check above can fail: with the clients' state files gone, Adam restarts and the figures differ."""
    config = RunConfig(protocol="sflv1", clients=2, epochs=4, optimizer="adam", seed=3, timeout=30)
    straight = _summary(run_in_threads(config, tmp_path / "straight"))
    run_in_threads(config.replace(epochs=2), tmp_path / "resumed")
    for state in (tmp_path / "resumed" / "clients").iterdir():
        state.unlink()
    resumed = _summary(run_in_threads(config, tmp_path / "resumed", resume=True))
    assert abs(resumed["train_loss"] - straight["train_loss"]) > 1e-4


def test_pyvertical_refuses_to_resume_without_the_owners_heads(tmp_path: Path) -> None:
    """The heads never leave their owners: without an owner's own state there is nothing to resume."""
    config = RunConfig(protocol="pyvertical", clients=2, epochs=1, seed=3, timeout=30)
    run_in_threads(config, tmp_path)
    assert "top" in torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for state in (tmp_path / "clients").iterdir():
        state.unlink()
    with pytest.raises((ConfigError, RemoteError), match="cannot resume after round 1"):
        run_in_threads(config.replace(epochs=2), tmp_path, resume=True)
    assert _summary(tmp_path / "summary.json")["status"] == "failed"


def test_a_resume_with_other_training_settings_is_refused(tmp_path: Path) -> None:
    """`splitfed server --resume` without --config could silently change the seed, lr or clients."""
    from splitfed import registry
    from splitfed.runtime.server import load_checkpoint

    config = RunConfig(protocol="sflv1", clients=2, epochs=1, seed=3, timeout=30)
    run_in_threads(config, tmp_path)
    spec = registry.get("sflv1")
    load_checkpoint(tmp_path, config.replace(epochs=3), spec)  # only --epochs may change
    with pytest.raises(ConfigError, match="keeps its settings") as refused:
        load_checkpoint(tmp_path, config.replace(epochs=3, seed=4, lr=0.1), spec)
    assert "'seed': 3" in str(refused.value) and "'lr': 0.001" in str(refused.value)


@pytest.mark.parametrize("protocol", ["sflv1", "fedavg"])
def test_augmented_runs_resume_exactly_and_augmentation_changes_training(protocol: str, tmp_path: Path) -> None:
    """Each batch's augmentation is seeded from (seed, client, round, epoch, step): a resume replays it."""
    config = RunConfig(
        protocol=protocol, clients=2, epochs=4, seed=3, timeout=30, augment="standard-noflip", optimizer="adam"
    )
    straight = _summary(run_in_threads(config, tmp_path / "straight"))
    run_in_threads(config.replace(epochs=2), tmp_path / "resumed")
    resumed = _summary(run_in_threads(config, tmp_path / "resumed", resume=True))
    assert resumed["train_loss"] == pytest.approx(straight["train_loss"], abs=1e-6)
    plain = _summary(run_in_threads(config.replace(augment="none"), tmp_path / "plain"))
    assert abs(plain["train_loss"] - straight["train_loss"]) > 1e-3  # the augmentation was applied
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["augment"] == "standard-noflip"
