"""Training-time augmentation, done by each client on its own rows.

Raw data never leaves its owner, so augmentation happens where the data is: a client
augments each training batch before its half of the model sees it. Evaluation never
augments. ``--augment`` takes:

* ``auto`` (default): ``standard`` for image folders and manifests (photos such as eye
  crops), ``none`` for the built-in digits and for data from a function of yours;
* ``none``;
* ``standard``: per image, a random horizontal flip, a small rotation (±10°), scale
  (0.9–1.1) and shift (±6% of each side), then brightness (±0.1 of the range) and contrast
  (×0.8–1.2). Faces and eye crops stay valid under a mirror image;
* ``standard-noflip``: the same without the flip (digits, text: a mirror image is not the
  same class);
* an import path (``package.module:name`` or ``path/to/file.py:name``) of your own: a
  function ``augment(x, generator)`` that takes a batch ``x`` (B, ...) and a
  ``torch.Generator`` to draw from and returns the augmented batch; or any callable of one
  argument, such as a ``torchvision.transforms.v2`` pipeline, which is then applied to each
  example with torch's global RNG seeded from the batch's generator (under a lock, and
  restored afterwards).

Every batch draws from its own generator, seeded from (``--seed``, client, round, local
epoch, step), so a run is reproducible, a resumed run augments exactly as the
uninterrupted one would have, and parties in threads of one process never share a
random stream. The built-in pipeline works on whole batches at once (one
``grid_sample`` call per batch), on the images as loaded (scaled to [-1, 1]).
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.errors import ConfigError, DataError
from splitfed.imports import is_import_path, load_object

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

BUILT_IN = ("auto", "none", "standard", "standard-noflip")
_GLOBAL_RNG = threading.Lock()


def check_augment(spec: str) -> None:
    if spec not in BUILT_IN and not is_import_path(spec):
        raise ConfigError(
            f"--augment {spec!r} is not one of {', '.join(BUILT_IN)}, nor an import path "
            "(package.module:name or path/to/file.py:name)"
        )


def make_augment(spec: str, kind: str, shape: tuple[int, ...]) -> Augment | None:
    """The augmentation a client applies to its training batches, or None.

    ``kind`` is the dataset's (``digits``, ``images`` or ``custom``), which ``auto`` follows.
    """
    check_augment(spec)
    if spec == "auto":
        spec = "standard" if kind == "images" else "none"
    if spec == "none":
        return None
    if spec in ("standard", "standard-noflip"):
        if len(shape) != 3:
            raise ConfigError(
                f"--augment {spec} works on images (channels, height, width), not examples of shape "
                f"{tuple(shape)}; use --augment none or a function of your own"
            )
        return StandardAugment(flip=spec == "standard")
    return _user_augment(spec)


def batch_generator(seed: int, client: int, round: int, epoch: int, step: int) -> torch.Generator:
    """A private generator for one training batch; the same arguments give the same draws."""
    state = np.random.SeedSequence([seed, client, round, epoch, step, 0xA06]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class StandardAugment:
    """Flip, rotate, scale, shift, brightness and contrast, with parameters drawn per image."""

    def __init__(
        self,
        *,
        flip: bool = True,
        degrees: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        shift: float = 0.06,
        brightness: float = 0.2,
        contrast: tuple[float, float] = (0.8, 1.2),
    ) -> None:
        self.flip, self.degrees, self.scale, self.shift = flip, degrees, scale, shift
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], generator))

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` images, one value of each per image."""

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) * (high - low) + low

        angle = uniform(-self.degrees, self.degrees) * math.pi / 180
        scale = uniform(*self.scale)
        tx, ty = uniform(-self.shift, self.shift) * 2, uniform(-self.shift, self.shift) * 2  # grid units span 2
        mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
        bright = uniform(-self.brightness, self.brightness)
        contrast = uniform(*self.contrast)
        return {
            "angle": angle,
            "scale": scale,
            "tx": tx,
            "ty": ty,
            "mirror": mirror,
            "bright": bright,
            "contrast": contrast,
        }

    def apply(
        self, x: torch.Tensor, p: dict[str, torch.Tensor], region: tuple[int, int, int, int] | None = None
    ) -> torch.Tensor:
        """Transform ``x`` (B, C, h, w) with parameters ``p`` (one row per image).

        ``region = (H, W, top, left)`` says that ``x`` is the band at (top, left) of H x W
        images: the whole image's transform is applied, and where it would fetch pixels from
        outside the band (which another party holds) the band's nearest edge pixel is used.
        """
        n = x.shape[0]
        if n == 0:
            return x
        # output pixel -> input pixel: scale and rotate about the centre, mirror x, then shift
        cos, sin = torch.cos(p["angle"]) / p["scale"], torch.sin(p["angle"]) / p["scale"]
        mirror = p["mirror"]
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, p["tx"]], 1), torch.stack([sin * mirror, cos, p["ty"]], 1)], 1
        ).to(x.dtype)
        if region is None:
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        else:
            grid = _band_grid(theta, x.shape, region)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        shape = (n, 1, 1, 1)
        out = (out - mean) * p["contrast"].view(shape).to(x.dtype) + mean + p["bright"].view(shape).to(x.dtype)
        return out.clamp(-1.0, 1.0)


def _band_grid(theta: torch.Tensor, band: torch.Size, region: tuple[int, int, int, int]) -> torch.Tensor:
    """The whole image's sampling grid, cut to the band and expressed in the band's own coordinates."""
    n, c, h, w = band
    height, width, top, left = region
    grid = F.affine_grid(theta, [n, c, height, width], align_corners=False)[:, top : top + h, left : left + w]
    px, py = ((grid[..., 0] + 1) * width - 1) / 2, ((grid[..., 1] + 1) * height - 1) / 2  # whole-image pixels
    return torch.stack([(2 * (px - left) + 1) / w - 1, (2 * (py - top) + 1) / h - 1], dim=-1)


def _user_augment(path: str) -> Augment:
    fn = load_object(path, "--augment")

    def per_example(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([torch.as_tensor(fn(example)) for example in x])

    apply = fn if _takes_generator(fn) else per_example

    def checked(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        try:
            out = apply(x, generator)
        except Exception as exc:
            raise DataError(f"--augment {path} failed on a batch of shape {tuple(x.shape)}: {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DataError(f"--augment {path} returned {got} for a batch of shape {tuple(x.shape)}")
        return out.to(x.dtype)

    return checked


def _takes_generator(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.name == "generator" for p in params)
