"""Input reconstruction from smashed data: how much of a client's input the server can rebuild.

The attacker is the server (or anyone on the wire). It knows the client half's architecture and
weights (in SFLv1/SFLv2 it averages them every round), and it holds an **auxiliary sample** of the
same distribution: rows or people disjoint from the victim's. It passes the auxiliary inputs
through the client half (and through the client's defences: clipping and noise, as the wire would
show them), trains a decoder from those activations back to the inputs, then decodes the victim's
activations. The figures are SSIM and PSNR (scikit-image) of the victim's reconstructions.

The decoder is a convolution, then transposed convolutions (each doubling the resolution, at
least one) until the activations' resolution reaches the image's, a resize to the exact size,
and a last convolution, with ``width`` channels throughout. ``depth`` adds that many 3x3
convolutions (with ReLU) after the first convolution and after every transposed one: a deeper
decoder for the same width (``depth=0``, the default, is the shallow one above).

Activations with no spatial extent left (a vector per example, or a 1x1 map: a pooled waist
such as ``mobilenet-private``'s) start instead with a linear layer from all of their numbers to
a ``width``-channel map at an eighth of the image's resolution, so every number can shape every
pixel; the transposed convolutions go on from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splitfed.errors import ConfigError
from splitfed.optim import make_optimizer


class Decoder(nn.Module):
    """Activations (C, h, w), or (N,) per example, back to images (channels, H, W)."""

    def __init__(
        self, acts_shape: tuple[int, ...], image_shape: tuple[int, ...], width: int = 64, depth: int = 0
    ) -> None:
        super().__init__()
        if len(acts_shape) not in (1, 3) or len(image_shape) != 3:
            raise ConfigError(
                f"the attack decodes activations shaped (C, h, w) or (N,) back to images (C, H, W), "
                f"got {acts_shape} -> {image_shape}"
            )
        if width < 1 or depth < 0:
            raise ConfigError(f"the decoder needs a width >= 1 and a depth >= 0: got width {width}, depth {depth}")
        self.size = tuple(image_shape[1:])

        def extra() -> list[nn.Module]:  # the --depth convolutions after the first layer and each upsampling
            return [m for _ in range(depth) for m in (nn.Conv2d(width, width, 3, padding=1), nn.ReLU())]

        if len(acts_shape) == 3 and acts_shape[1] * acts_shape[2] > 1:
            channels, h, w = acts_shape
            layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), *extra()]
        else:  # nothing spatial left: a linear layer draws the first map, at an eighth of the image's size
            h, w = (max(1, math.ceil(side / 8)) for side in self.size)
            layers = [
                nn.Flatten(),
                nn.Linear(math.prod(acts_shape), width * h * w),
                nn.Unflatten(1, (width, h, w)),
                nn.ReLU(),
                *extra(),
            ]
        ups = max(1, math.ceil(math.log2(max(self.size[0] / h, self.size[1] / w))))
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(), *extra()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, image_shape[0], 3, padding=1)

    def forward(self, acts: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.body(acts), size=self.size, mode="bilinear", align_corners=False)
        return self.out(up)


@dataclass
class AttackResult:
    ssim: float
    psnr: float
    baseline_ssim: float  # the auxiliary sample's mean image, for every victim: what knowing nothing scores
    train_mse: float
    originals: torch.Tensor
    reconstructions: torch.Tensor


#: the client's defence as the attacker applies it: (activations, generator) -> what the wire shows
Release = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def linked(release: Release, sends: int) -> Release:
    """The mean of ``sends`` independent releases of the same activations: what an attacker who links an
    example's repeated sends (the test pass sends every held-out row each round, in the same order) and
    averages them sees. Against noise of std s it leaves noise of std s / sqrt(sends)."""
    if sends < 1:
        raise ConfigError(f"an attacker links at least 1 send of each example, got {sends}")

    def mean_of_sends(acts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.stack([release(acts, generator) for _ in range(sends)]).mean(0)

    return release if sends == 1 else mean_of_sends


def smashed(client_half: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """The client half's output for ``x`` (eval mode, no gradients), before any defence."""
    was = client_half.training
    client_half.eval()
    with torch.no_grad():
        out = torch.cat([client_half(x[start : start + batch]) for start in range(0, len(x), batch)])
    client_half.train(was)
    return out


def train_decoder(
    acts: torch.Tensor,
    images: torch.Tensor,
    *,
    release: Release | None = None,
    width: int = 64,
    depth: int = 0,
    epochs: int = 60,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[Decoder, float]:
    """Fit a decoder from activations to images by MSE (Adam, batches of 32, cosine lr from ``lr`` down to
    0); (decoder, last epoch's MSE). ``release`` (the client's defence) is applied to every batch afresh, so
    against noise the decoder sees new draws each epoch, as an attacker who knows the defence would simulate
    them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = Decoder(tuple(acts.shape[1:]), tuple(images.shape[1:]), width, depth)
    opt = make_optimizer(decoder.parameters(), "adam", lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(acts) / 32))
    gen = torch.Generator().manual_seed(seed)
    total = float("nan")
    for _ in range(epochs):
        total, order = 0.0, torch.randperm(len(acts), generator=gen)
        for start in range(0, len(acts), 32):
            rows = order[start : start + 32]
            seen = release(acts[rows], gen) if release is not None else acts[rows]
            loss = F.mse_loss(decoder(seen), images[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(rows)
        total /= len(acts)
    return decoder.eval(), total


def image_scores(originals: torch.Tensor, guesses: torch.Tensor, data_range: float = 2.0) -> tuple[float, float]:
    """Mean SSIM and PSNR over images (N, C, H, W) in a range of ``data_range`` (2 for [-1, 1])."""
    try:
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency of the attack extra
        raise ConfigError("the attack needs scikit-image: pip install 'splitfed[attack]'") from exc
    lo = float(originals.min())
    ssims, psnrs = [], []
    for a, b in zip(originals.numpy(), guesses.clamp(lo, lo + data_range).numpy(), strict=True):
        a, b = np.moveaxis(a, 0, -1).astype(np.float64), np.moveaxis(b, 0, -1).astype(np.float64)
        ssims.append(structural_similarity(a, b, data_range=data_range, channel_axis=-1, win_size=_window(a)))
        psnrs.append(peak_signal_noise_ratio(a, b, data_range=data_range))
    return float(np.mean(ssims)), float(np.mean(psnrs))


def _window(image: np.ndarray) -> int:
    side = min(image.shape[:2])
    return min(7, side if side % 2 else side - 1)


def reconstruct(
    client_half: nn.Module,
    aux_x: torch.Tensor,
    victim_x: torch.Tensor,
    *,
    release: Release | None = None,
    width: int = 64,
    depth: int = 0,
    epochs: int = 60,
    lr: float = 2e-3,
    seed: int = 0,
) -> AttackResult:
    """The whole attack: train on the auxiliary rows, rebuild the victim's, score against the originals.
    The victim's activations go through ``release`` with a stream of their own (the client's noise)."""
    aux_acts = smashed(client_half, aux_x)
    decoder, mse = train_decoder(
        aux_acts, aux_x, release=release, width=width, depth=depth, epochs=epochs, lr=lr, seed=seed
    )
    victim_acts = smashed(client_half, victim_x)
    if release is not None:
        victim_acts = release(victim_acts, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        guesses = decoder(victim_acts)
    ssim, psnr = image_scores(victim_x, guesses)
    baseline, _ = image_scores(victim_x, aux_x.mean(0, keepdim=True).expand_as(victim_x))
    return AttackResult(ssim, psnr, baseline, mse, victim_x, guesses)


def save_figure(result: AttackResult, path: Path, count: int = 8, title: str = "") -> Path:
    """Originals (top row) above their reconstructions (bottom row), as a PNG written atomically."""
    from splitfed import plots

    plt = plots.new_figure()
    count = min(count, len(result.originals))
    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 2.2), squeeze=False)
    for i in range(count):
        for row, images in enumerate((result.originals, result.reconstructions)):
            axes[row][i].imshow(images[i, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            axes[row][i].axis("off")
    fig.suptitle(title or f"top: originals, bottom: reconstructions (SSIM {result.ssim:.2f})", fontsize=8)
    plots.save_figure(fig, path)
    return path
