"""Defences of the labels of a label-private run (--labels client): --label-clip/--label-noise on the
gradient a client returns at its head's input, applied before encoding, and --heads local, which keeps
each head on its client; the label attack computes what the client sends and can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from splitfed.protocols.defences import GRAD_STREAM, GradientDefence, noise_generator
from test_defences import WireSpy

from splitfed.attack_run import label_attack_run
from splitfed.checks import check_run
from splitfed.config import RunConfig
from splitfed.data.shards import batch_order, client_shard
from splitfed.errors import ConfigError
from splitfed.evaluate import evaluate_run
from splitfed.label_attack import head_input_gradients, infer_labels
from splitfed.models import build_model, split_three
from splitfed.registry import get as get_protocol
from splitfed.testing import run_in_threads
from splitfed.wire import decode


def first_batch_head_gradient(config: RunConfig) -> torch.Tensor:
    """The gradient at the head's input of the run's first training batch, before any defence."""
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    rows = batch_order(len(shard.train_y), config.batch_size, seed=config.seed, client=0, round=1, epoch=0)[0]
    parts = split_three(build_model(config.model, shard.shape, len(shard.classes), config.seed), 1, 1)
    return head_input_gradients(*parts, shard.train_x[rows], shard.train_y[rows], batch=config.batch_size)


def test_the_returned_gradient_is_clipped_and_noised_on_the_client_before_encoding(tmp_path: Path) -> None:
    options = {"labels": "client", "label_clip": 0.1, "label_noise": 2.0}
    config = RunConfig(protocol="sflv1", clients=1, epochs=1, batch_size=64, seed=5, options=options)
    spies: list[WireSpy] = []
    run_in_threads(config, tmp_path, wrap_server=lambda inner: spies.append(WireSpy(inner, "headgrad")) or spies[-1])
    on_wire = decode(spies[0].frames[0]).tensors["grad"].reshape(64, -1)
    clean = first_batch_head_gradient(config)
    clipped = GradientDefence(clip=0.1).release(clean, None)
    assert float((clipped * 64).norm(dim=1).max()) <= 0.1 + 1e-6  # each example's own gradient, bounded
    noise = torch.randn(clean.shape, generator=noise_generator(5, 0, 1, 0, 0, GRAD_STREAM)) * (2.0 * 0.1)
    assert torch.allclose(on_wire, clipped + noise / 64, atol=1e-6)  # what crossed was already clipped and noised
    assert float((on_wire - clipped).norm()) > 10 * float(clipped.norm())  # the server never sees the clean one


def test_the_attack_on_defended_gradients_falls_to_chance_for_the_same_rows() -> None:
    shard = client_shard("digits", clients=1, client=0, seed=5)
    x, y = shard.test_x[:256], shard.test_y[:256]
    parts = split_three(build_model("cnn", (1, 8, 8), 10, 5), 1, 1)
    clear = infer_labels(head_input_gradients(*parts, x, y, batch=64), y, 10)
    guard = GradientDefence(clip=0.1, noise=3.0).release
    hidden = infer_labels(head_input_gradients(*parts, x, y, batch=64, head_release=guard), y, 10)
    assert clear.accuracy > 0.8, clear
    assert hidden.accuracy < max(0.2, hidden.shuffled + 0.05), hidden  # within the shuffled-label baseline


def test_local_heads_never_reach_the_server_and_the_report_says_it_cannot_classify(tmp_path: Path) -> None:
    options = {"labels": "client", "heads": "local"}
    config = RunConfig(protocol="sflv1", clients=2, epochs=2, seed=4, timeout=30, options=options)
    spies: list[WireSpy] = []
    summary = json.loads(
        run_in_threads(
            config, tmp_path, wrap_server=lambda inner: spies.append(WireSpy(inner, "weights")) or spies[-1]
        ).read_text()
    )
    sent = [decode(frames).tensors for frames in spies[0].frames]
    assert len(sent) == 4 and all(keys and not any(k.startswith("head.") for k in keys) for keys in sent)
    assert summary["test_accuracy"] > 0.6
    heads = [torch.load(p, weights_only=True)["state"]["head"] for p in sorted((tmp_path / "clients").glob("*.pt"))]
    assert len(heads) == 2 and not torch.equal(heads[0]["head.1.weight"], heads[1]["head.1.weight"])  # each its own
    with pytest.raises(ConfigError, match="--heads local"):  # no head on the server: no one model to evaluate
        evaluate_run(tmp_path)
    report = label_attack_run(tmp_path, victims=64)
    assert report["heads"] == "local" and report["head_of"] == "client-0"
    assert report["checkpoint"]["classify"] is None and 0 <= report["checkpoint"]["features"] <= 1


def test_the_label_defence_flags_are_checked_before_anything_starts() -> None:
    spec = get_protocol("sflv1")
    with pytest.raises(ConfigError, match="--label-noise is in units of the clipping bound"):
        check_run(RunConfig(protocol="sflv1", options={"labels": "client", "label_noise": 1.0}), spec)
    with pytest.raises(ConfigError, match="--label-clip applies with --labels client only"):
        check_run(RunConfig(protocol="sflv1", options={"label_clip": 1.0}), spec)
    with pytest.raises(ConfigError, match="--heads applies with --labels client only"):
        check_run(RunConfig(protocol="sflv2", options={"heads": "local"}), get_protocol("sflv2"))
    with pytest.raises(ConfigError, match="--label-noise must be a finite number >= 0"):
        check_run(RunConfig(protocol="sflv1", options={"labels": "client", "label_noise": -1.0}), spec)
    with pytest.raises(ConfigError, match="--label-clip must be a finite number >= 0"):
        check_run(RunConfig(protocol="sflv1", options={"labels": "client", "label_clip": float("inf")}), spec)
    with pytest.raises(ConfigError, match="--heads 'shared' is not one of averaged, local"):
        check_run(RunConfig(protocol="sflv1", options={"labels": "client", "heads": "shared"}), spec)
    check_run(RunConfig(protocol="sflv1", options={"labels": "client", "label_clip": 1.0, "heads": "local"}), spec)
