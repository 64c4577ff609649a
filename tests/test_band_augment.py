"""Parties holding bands of the same images augment them as one whole image would be augmented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from splitfed.config import RunConfig
from splitfed.data.augment import StandardAugment
from splitfed.data.band_augment import BandAugment, band_augment
from splitfed.errors import ConfigError
from splitfed.models.rnn import from_sequence, to_sequence
from splitfed.testing import run_in_threads


def _images(n: int = 6, c: int = 1, h: int = 24, w: int = 40) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_a_vertical_shift_and_brightness_of_bands_equal_the_whole_images_exactly() -> None:
    x, base = _images(), StandardAugment(flip=False)
    p = base.draw(len(x), torch.Generator().manual_seed(1))
    p = {**p, "angle": torch.zeros(len(x)), "scale": torch.ones(len(x)), "tx": torch.zeros(len(x))}
    p["contrast"] = torch.ones(len(x))  # contrast is about each band's own mean
    whole = base.apply(x, p)
    for left, right in ((0, 17), (17, 40)):  # two owners' column bands
        band = base.apply(x[..., left:right], p, (24, 40, 0, left))
        assert torch.allclose(band, whole[..., left:right], atol=1e-5)


def test_any_transform_of_a_band_matches_the_whole_image_away_from_its_edges() -> None:
    x, base = _images(), StandardAugment(flip=False, brightness=0.0, contrast=(1.0, 1.0))
    p = base.draw(len(x), torch.Generator().manual_seed(2))
    whole = base.apply(x, p)
    band = base.apply(x[..., 20:], p, (24, 40, 0, 20))  # the right-hand band
    inner = slice(10, 20 - 1)  # far enough from the band's left edge for a 10° turn, ±6% shift and 1.1x scale
    assert torch.allclose(band[..., inner], whole[..., 20:][..., inner], atol=1e-5)
    assert not torch.allclose(band[..., :2], whole[..., 20:22], atol=1e-3)  # at the edge it cannot know


def test_every_party_draws_the_same_parameters_per_row_and_new_ones_per_round() -> None:
    aug = band_augment("standard", "images", (24, 40, 0, 20), columns=True, protocol="pyvertical")
    assert isinstance(aug, BandAugment) and not aug.base.flip  # column bands never mirror
    other = band_augment("standard", "images", (24, 40, 0, 0), columns=True, protocol="pyvertical")
    a = aug.params(50, seed=3, group=0, round=2, epoch=0)
    b = other.params(50, seed=3, group=0, round=2, epoch=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = aug.params(50, seed=3, group=0, round=3, epoch=0)
    assert not torch.equal(a["angle"], c["angle"])
    rows = band_augment("standard", "images", (24, 40, 8, 0), columns=False, protocol="fedsl")
    assert rows.base.flip  # full-width row bands mirror exactly
    assert band_augment("auto", "digits", (8, 8, 0, 0), columns=True, protocol="pyvertical") is None
    with pytest.raises(ConfigError, match="band of every example"):
        band_augment("pipeline:flip", "images", (8, 8, 0, 0), columns=True, protocol="fedsl")


@pytest.mark.parametrize("order", ["rows", "cols"])
def test_a_segment_turns_back_into_its_band(order: str) -> None:
    x = _images(c=3)
    seq = to_sequence(x, order)
    assert torch.equal(from_sequence(seq, order, 3), x)
    assert torch.equal(from_sequence(seq[:, 5:9], order, 3), x[:, :, 5:9] if order == "rows" else x[..., 5:9])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of small grey images (a bright bar at the top or the bottom), as a folder per class."""
    root = tmp_path_factory.mktemp("bars")
    rng = np.random.default_rng(0)
    for label in ("top", "bottom"):
        (root / label).mkdir()
        for n in range(24):
            pixels = rng.uniform(0, 60, (16, 16))
            (pixels[2:5] if label == "top" else pixels[11:14])[:] = 230
            Image.fromarray(pixels.astype(np.uint8)).save(root / label / f"{n}.png")
    return root


@pytest.mark.parametrize("protocol", ["fedsl", "pyvertical"])
def test_band_protocols_train_on_augmented_bands(protocol: str, image_folder: Path, tmp_path: Path) -> None:
    losses = {}
    for augment in ("none", "standard"):
        config = RunConfig(
            protocol=protocol, clients=2, epochs=2, data=str(image_folder), augment=augment, seed=5, timeout=30
        )
        run_in_threads(config, tmp_path / augment)
        rows = [json.loads(line) for line in (tmp_path / augment / "metrics.jsonl").read_text().splitlines()]
        losses[augment] = [r["train_loss"] for r in rows]
        assert [r["round"] for r in rows] == [1, 2] and all(np.isfinite(losses[augment]))
    assert losses["none"] != losses["standard"]  # the augmentation really changed what was trained on
