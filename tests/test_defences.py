"""Client-side defences of the smashed data: clipping, noise before encoding, NoPeek; and the flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from splitfed.protocols.defences import Defence, distance_correlation, noise_generator

from splitfed.checks import check_smashed
from splitfed.config import RunConfig
from splitfed.data.shards import batch_order, client_shard
from splitfed.errors import ConfigError
from splitfed.models import build_model, split_model
from splitfed.registry import get as get_protocol
from splitfed.testing import run_in_threads
from splitfed.transport.base import ServerTransport
from splitfed.wire import decode


class WireSpy(ServerTransport):
    """Wraps the server's transport and keeps the frames of every message of ``kind`` it receives."""

    def __init__(self, inner: ServerTransport, kind: str) -> None:
        self.inner, self.kind, self.address = inner, kind, inner.address
        self.frames: list[list[bytes]] = []

    def recv(self, timeout: float):
        got = self.inner.recv(timeout)
        if got is not None and json.loads(bytes(got[1][0]))["kind"] == self.kind:
            self.frames.append([bytes(f) for f in got[1]])
        return got

    def send(self, peer, frames, *, block: bool = True) -> bool:
        return self.inner.send(peer, frames, block=block)

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


def first_batch_acts(config: RunConfig, cut: int = 1) -> torch.Tensor:
    """What the client half computes on the run's first training batch, before any defence."""
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    rows = batch_order(len(shard.train_y), config.batch_size, seed=config.seed, client=0, round=1, epoch=0)[0]
    half = split_model(build_model(config.model, shard.shape, len(shard.classes), config.seed), cut)[0]
    with torch.no_grad():
        return half(shard.train_x[rows])


def test_noise_is_added_on_the_client_before_the_activations_are_encoded(tmp_path: Path) -> None:
    config = RunConfig(
        protocol="sflv1", clients=1, epochs=1, batch_size=64, seed=5, dp_clip=2.0, dp_noise=0.5, wire_compress="int8"
    )
    spies: list[WireSpy] = []
    run_in_threads(config, tmp_path, wrap_server=lambda inner: spies.append(WireSpy(inner, "forward")) or spies[-1])
    first = spies[0].frames[0]
    header = json.loads(first[0])
    assert [t["dtype"] for t in header["tensors"]][:2] == ["int8", "float32"]  # values and scales, as sent
    on_wire = decode(first).tensors["acts"]
    clean = first_batch_acts(config)
    clipped = Defence(clip=2.0).release(clean, None)
    assert float(clipped.reshape(64, -1).norm(dim=1).max()) <= 2.0 + 1e-5
    noise = torch.randn(clean.shape, generator=noise_generator(5, 0, 1, 0, 0)) * (0.5 * 2.0)
    sent = clipped + noise
    step = sent.transpose(0, 1).reshape(clean.shape[1], -1).abs().amax(1).reshape(1, -1, 1, 1) / 127
    assert bool(((on_wire - sent).abs() <= step / 2 + 1e-5).all())  # what was quantised was already noised
    assert float((on_wire - clipped).std()) > 0.9  # the server never sees the clean (clipped) activations


def test_privacy_strong_sends_each_example_as_256_normalised_numbers_under_its_noise(tmp_path: Path) -> None:
    """The preset end to end on the built-in digits: mobilenet-private cut after its pool, every example
    scaled to norm 1 (its LayerNorm gives each the same norm, so the clip bounds none short) and noised
    before it leaves; the test pass sends noised activations too."""
    config = RunConfig(protocol="sflv1", clients=1, epochs=1, batch_size=64, seed=5, privacy="strong")
    assert (config.model, config.cut, config.dp_clip, config.dp_noise) == ("mobilenet-private", 5, 1.0, 0.15)
    spies: list[WireSpy] = []
    wrap = lambda inner: spies.append(WireSpy(inner, "forward")) or spies[-1]  # noqa: E731
    run_in_threads(config, tmp_path, wrap_server=wrap)
    on_wire = decode(spies[0].frames[0]).tensors["acts"]
    clean = first_batch_acts(config, cut=5)
    assert tuple(on_wire.shape) == tuple(clean.shape) == (64, 256)
    clipped = Defence(clip=1.0).release(clean, None)
    assert torch.allclose(clipped.norm(dim=1), torch.ones(64), atol=1e-4)
    noise = torch.randn(clean.shape, generator=noise_generator(5, 0, 1, 0, 0)) * 0.15
    assert torch.allclose(on_wire, clipped + noise, atol=1e-5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rounds_done"] == 1 and 0.0 <= summary["test_accuracy"] <= 1.0
    from splitfed.cli import main  # the attack takes the 256 numbers (a vector, nothing spatial) as they are

    assert main(["attack", str(tmp_path), "--epochs", "1", "--victims", "16"]) == 0
    report = json.loads((tmp_path / "attack" / "attack.json").read_text())
    assert report["defences"]["dp_noise"] == 0.15 and -1 <= report["ssim"] <= 1


def test_int8_runs_send_about_a_quarter_of_the_bytes(tmp_path: Path) -> None:
    figures = {}
    for codec in ("none", "int8"):
        config = RunConfig(protocol="sflv1", clients=2, epochs=1, seed=3, wire_compress=codec)
        figures[codec] = json.loads(run_in_threads(config, tmp_path / codec).read_text())
    assert figures["int8"]["bytes_sent"] < 0.4 * figures["none"]["bytes_sent"]
    assert figures["int8"]["bytes_received"] < 0.5 * figures["none"]["bytes_received"]
    assert figures["int8"]["test_accuracy"] > figures["none"]["test_accuracy"] - 0.05


def test_clipping_bounds_every_example_and_noise_has_the_stated_scale() -> None:
    acts = torch.randn(32, 4, 5, 5) * 10
    out = Defence(clip=1.5, noise=2.0).release(acts, torch.Generator().manual_seed(0))
    clipped = Defence(clip=1.5).release(acts, None)
    assert torch.allclose(clipped.reshape(32, -1).norm(dim=1), torch.full((32,), 1.5), atol=1e-5)
    assert abs(float((out - clipped).std()) - 3.0) < 0.1
    small = torch.full((2, 3), 0.01)
    assert torch.equal(Defence(clip=1.5).release(small, None), small)  # inside the bound: unchanged


def test_distance_correlation_is_one_for_a_copy_and_small_for_independent_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, generator=gen)
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1) < 1e-4
    assert float(distance_correlation(x, torch.randn(256, 2, generator=gen))) < 0.2
    assert float(distance_correlation(x, x**2)) > 0.2  # dependence that correlation misses
    z = (2 * x).requires_grad_(True)
    distance_correlation(x, z).backward()
    assert torch.isfinite(z.grad).all()


def centralised_with_defences(config: RunConfig) -> dict[str, torch.Tensor]:
    """The unsplit model trained on the same batches, with the defences written out by hand:
    loss = CE(server(clip(client(x)) + noise)) + nopeek * dCor(x, client(x))."""
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    model = build_model(config.model, shard.shape, len(shard.classes), config.seed)
    client, server = split_model(model, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    for rnd in range(1, config.epochs + 1):
        order = batch_order(len(shard.train_y), config.batch_size, seed=config.seed, client=0, round=rnd, epoch=0)
        for step, rows in enumerate(order):
            x = shard.train_x[rows]
            acts = client(x)
            norms = acts.reshape(len(x), -1).norm(dim=1).reshape(-1, 1, 1, 1)
            sent = acts * torch.clamp(config.dp_clip / norms, max=1.0)
            noise = torch.randn(acts.shape, generator=noise_generator(config.seed, 0, rnd, 0, step))
            sent = sent + config.dp_noise * config.dp_clip * noise
            loss = torch.nn.functional.cross_entropy(server(sent), shard.train_y[rows])
            loss = loss + config.nopeek * distance_correlation(x, acts)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.state_dict()


def test_one_client_with_every_defence_equals_centralised_training_with_them_written_out(tmp_path: Path) -> None:
    config = RunConfig(
        protocol="sflv1",
        clients=1,
        epochs=2,
        batch_size=64,
        lr=0.05,
        optimizer="sgd",
        seed=7,
        dp_clip=3.0,
        dp_noise=0.3,
        nopeek=0.5,
    )
    run_in_threads(config, tmp_path / "defended")
    ckpt = torch.load(tmp_path / "defended" / "checkpoint.pt", weights_only=True)
    trained = {**ckpt["client_half"], **ckpt["server_half"]}
    reference = centralised_with_defences(config)
    undefended = config.replace(dp_clip=3.0, dp_noise=0.0, nopeek=0.0)
    plain = centralised_with_defences(undefended)
    assert max(float((reference[k] - plain[k]).abs().max()) for k in plain) > 1e-3  # the defences changed training
    for k, ref in reference.items():
        assert torch.allclose(trained[k], ref, atol=1e-5), k


def test_the_flags_are_checked() -> None:
    with pytest.raises(ConfigError, match="give --dp-clip too"):
        RunConfig(protocol="sflv1", dp_noise=1.0)
    with pytest.raises(ConfigError, match="--nopeek must be >= 0"):
        RunConfig(protocol="sflv1", nopeek=-1.0)
    with pytest.raises(ConfigError, match="--wire-compress"):
        RunConfig(protocol="sflv1", wire_compress="gzip")
    with pytest.raises(ConfigError, match="--dp-clip applies to sflv1, sflv2 and sl only"):
        check_smashed(RunConfig(protocol="fedavg", dp_clip=1.0), get_protocol("fedavg"))
    strong = RunConfig(protocol="sflv1", privacy="strong")
    assert strong.dp_noise > 0 and strong.dp_clip > 0
    assert (strong.model, strong.cut, strong.lr) == ("mobilenet-private", 5, 2e-3)  # what the tables measured
    mobilenet = RunConfig(protocol="sflv1", privacy="strong", model="mobilenet")
    assert (mobilenet.model, mobilenet.cut) == ("mobilenet", None)  # the preset's cut comes with its model only
    assert RunConfig(protocol="sflv1", privacy="strong", optimizer="sgd").lr == 1e-3  # its lr was tuned with adam
    # a saved config is taken as saved: a setting at its default value stays (a run under an earlier preset,
    # lr 1e-3, must resume with the lr its checkpoint was trained with)
    saved = {**strong.to_dict(), "lr": 1e-3}
    assert RunConfig.from_dict(saved).lr == 1e-3 and RunConfig.from_dict(saved).privacy == "strong"
    by_hand = RunConfig.from_dict({"protocol": "sflv1", "privacy": "strong", "lr": 1e-3})  # what it leaves out
    assert (by_hand.model, by_hand.cut, by_hand.dp_noise, by_hand.lr) == ("mobilenet-private", 5, 0.15, 1e-3)
    assert RunConfig.from_dict({"protocol": "sflv1", "privacy": "strong", "model": "cnn"}).cut is None
    with pytest.raises(ConfigError, match="privacy 'weak' is not one of"):
        RunConfig.from_dict({**saved, "privacy": "weak"})
    assert RunConfig(protocol="sflv1", privacy="strong", dp_clip=3.0).dp_clip == 3.0  # a given flag wins
    assert RunConfig(protocol="sflv1", privacy="strong", lr=1e-2).lr == 1e-2
    assert RunConfig.from_dict(strong.to_dict()) == strong  # the server's copy, sent to clients, is the same
