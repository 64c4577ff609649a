"""Augmentation when each party holds a band of every image (FedSL's segments, PyVertical's bands).

No party sees a whole image, so no party can augment one on its own. Each party applies
instead the *same* random transform of the whole image to the band it holds: a row's
parameters come from a generator seeded by (``--seed``, group, round, local epoch), drawn
for all of the group's training rows at once, so every party of the group draws the same
values for the same row without a word on the wire. Shifts, rotations and scalings move
pixels across band edges; where the whole image's transform would fetch a pixel that
another party holds, the band's nearest edge pixel stands in. Brightness is exact;
contrast works about the band's own mean. A horizontal mirror would swap column bands
between parties, so bands of columns never flip; bands of full-width rows (FedSL's
default) do with ``standard``.

``--augment`` takes ``auto`` (``standard`` for image folders, else ``none``), ``none``,
``standard`` and ``standard-noflip`` here; a function of your own sees whole examples,
which no party of these protocols holds.
"""

from __future__ import annotations

import numpy as np
import torch

from splitfed.data.augment import StandardAugment, check_augment
from splitfed.errors import ConfigError


class BandAugment:
    """The whole-image augmentation of rows, applied to one band of them."""

    def __init__(self, base: StandardAugment, region: tuple[int, int, int, int]) -> None:
        self.base, self.region = base, region  # region = (image height, image width, band top, band left)

    def params(self, rows: int, *, seed: int, group: int, round: int, epoch: int) -> dict[str, torch.Tensor]:
        """Parameters for every training row of the group, the same on each of its parties."""
        state = np.random.SeedSequence([seed, group, round, epoch, 0xBA0D]).generate_state(1)[0]
        return self.base.draw(rows, torch.Generator().manual_seed(int(state)))

    def __call__(self, band: torch.Tensor, params: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """Augment ``band`` (B, C, h, w), which holds training rows ``rows``."""
        return self.base.apply(band, {k: v[rows] for k, v in params.items()}, self.region)


def band_augment(
    spec: str, kind: str, region: tuple[int, int, int, int], *, columns: bool, protocol: str
) -> BandAugment | None:
    """What ``--augment spec`` means for a party holding ``region`` of every image, or None."""
    check_augment(spec)
    if spec == "auto":
        spec = "standard" if kind == "images" else "none"
    if spec == "none":
        return None
    if spec not in ("standard", "standard-noflip"):
        raise ConfigError(
            f"--augment {spec}: in {protocol} each party holds only a band of every example, and a function of "
            "your own augments whole examples; use --augment standard, standard-noflip or none"
        )
    return BandAugment(StandardAugment(flip=spec == "standard" and not columns), region)
