"""The reconstruction attack can fail: it rebuilds inputs from an unprotected cut, and much worse through noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from splitfed.protocols.defences import Defence

from splitfed.attack import Decoder, linked, reconstruct, save_figure
from splitfed.config import RunConfig
from splitfed.data.shards import client_shard
from splitfed.errors import ConfigError
from splitfed.models import build_model, split_model
from splitfed.testing import run_in_threads


def test_the_attack_rebuilds_digits_from_a_trained_cut_and_fails_through_noise(tmp_path: Path) -> None:
    run_in_threads(RunConfig(protocol="sflv1", clients=1, epochs=1, seed=4), tmp_path / "run")
    half = split_model(build_model("cnn", (1, 8, 8), 10, 4), 1)[0]
    half.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["client_half"])
    shard = client_shard("digits", clients=1, client=0, seed=4)
    aux, victims = shard.train_x[:500], shard.test_x[:64]  # disjoint rows: the attacker never saw the victims
    clear = reconstruct(half, aux, victims, width=32, epochs=10)
    noisy = reconstruct(half, aux, victims, release=Defence(clip=2.0, noise=1.0).release, width=32, epochs=10)
    assert clear.ssim > 0.8 and clear.ssim > clear.baseline_ssim + 0.2, clear.ssim
    assert noisy.ssim < clear.ssim - 0.25, (noisy.ssim, clear.ssim)
    assert noisy.psnr < clear.psnr - 3
    figure = save_figure(clear, tmp_path / "recon.png")
    assert figure.stat().st_size > 1000


def test_the_decoder_reaches_the_image_size_from_every_cut() -> None:
    full = build_model("cnn", (1, 32, 64), 10, 0)
    x = torch.zeros(2, 1, 32, 64)
    for cut in (1, 2, 3):
        acts = split_model(full, cut)[0](x)
        assert Decoder(tuple(acts.shape[1:]), (1, 32, 64), width=8)(acts).shape == x.shape


def test_the_decoder_takes_a_vector_or_a_1x1_map_and_can_learn_from_it() -> None:
    """A pooled waist leaves nothing spatial: the decoder starts with a linear layer from every number, so an
    attacker facing a vector is not handicapped by a 3x3 convolution over a 1x1 map."""
    for acts in ((16,), (16, 1, 1)):
        decoder = Decoder(acts, (1, 64, 128), width=8, depth=1)
        assert isinstance(decoder.body[1], torch.nn.Linear) and decoder.body[1].in_features == 16
        assert decoder(torch.zeros(3, *acts)).shape == (3, 1, 64, 128)
    # an image that is a linear function of a 16-number code comes back from the code
    gen = torch.Generator().manual_seed(0)
    basis = torch.nn.functional.interpolate(torch.randn(16, 1, 4, 4, generator=gen), size=(16, 16), mode="bilinear")
    codes = torch.randn(600, 16, generator=gen)
    images = torch.einsum("nk,kchw->nchw", codes, basis).tanh()
    from splitfed.attack import image_scores, train_decoder

    decoder, _ = train_decoder(codes[:500], images[:500], width=16, epochs=30, seed=0)
    with torch.no_grad():
        ssim, _ = image_scores(images[500:], decoder(codes[500:]))
    mean_only, _ = image_scores(images[500:], images[:500].mean(0, keepdim=True).expand(100, -1, -1, -1))
    assert ssim > 0.6 and ssim > mean_only + 0.5, (ssim, mean_only)
    with pytest.raises(ConfigError, match=r"\(C, h, w\) or \(N,\)"):
        Decoder((4, 4), (1, 32, 32))


def test_a_deeper_decoder_adds_convolutions_and_the_default_stays_shallow() -> None:
    acts, image = (8, 4, 4), (1, 32, 32)
    shallow, deeper = Decoder(acts, image, width=16), Decoder(acts, image, width=16, depth=2)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in d.body) for d in (shallow, deeper)]
    assert convs == [1, 1 + 2 * 4]  # two more after the first layer and after each of the three upsamplings
    assert deeper(torch.zeros(2, *acts)).shape == (2, *image)
    with pytest.raises(ConfigError, match="depth"):
        Decoder(acts, image, width=16, depth=-1)


def test_an_attacker_who_averages_linked_sends_sees_less_noise() -> None:
    release = Defence(clip=1.0, noise=1.0).release
    acts = torch.zeros(2000, 8)  # under the clip: what arrives is the noise alone, std 1 per element
    once = release(acts, torch.Generator().manual_seed(0))
    four = linked(release, 4)(acts, torch.Generator().manual_seed(0))
    assert 0.95 < float(once.std()) < 1.05 and 0.475 < float(four.std()) < 0.525  # 1 / sqrt(4)
    assert linked(release, 1) is release
    with pytest.raises(ConfigError, match="at least 1 send"):
        linked(release, 0)


def test_splitfed_attack_writes_its_report_and_figure(tmp_path: Path, capsys) -> None:
    from splitfed.cli import main

    run_in_threads(RunConfig(protocol="sflv1", clients=1, epochs=1, seed=4, dp_clip=2.0, dp_noise=0.1), tmp_path)
    assert main(["attack", str(tmp_path), "--epochs", "2", "--victims", "16"]) == 0
    report = json.loads((tmp_path / "attack" / "attack.json").read_text())
    assert capsys.readouterr().out.strip() == str(tmp_path / "attack" / "attack.json")
    assert report["attacker"].startswith("half the held-out test rows") and report["victims"] == 16
    assert report["defences"]["dp_noise"] == 0.1 and -1 <= report["ssim"] <= 1
    assert (tmp_path / "attack" / "reconstructions.png").stat().st_size > 1000
    assert report["decoder"]["depth"] == 0 and report["sends_averaged"] == 1
    flags = ["--epochs", "1", "--victims", "8", "--depth", "1", "--lr", "0.001", "--sends", "3"]
    assert main(["attack", str(tmp_path), *flags, "--out", str(tmp_path / "deeper")]) == 0
    deeper = json.loads((tmp_path / "deeper" / "attack.json").read_text())
    assert deeper["decoder"]["depth"] == 1 and deeper["decoder"]["lr"] == 0.001 and deeper["sends_averaged"] == 3
    capsys.readouterr()
    fedavg = tmp_path / "fedavg"
    run_in_threads(RunConfig(protocol="fedavg", clients=1, epochs=1, seed=4), fedavg)
    assert main(["attack", str(fedavg)]) == 1
    assert "needs a client half" in capsys.readouterr().err
