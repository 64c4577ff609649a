"""Eye-region crop geometry: level the eyes, then cut a box sized by the inter-ocular distance.

All pure functions of two eye positions, so they are tested without any detector. In the
rotated frame (u along the eye line, v perpendicular, pointing down) the box spans
``u in [-W/2, W/2]`` and ``v in [-up * iod, -up * iod + H]``, where ``W = width * iod``
and ``H = W * out_h / out_w``. The defaults (width 2.4, up 0.8, 64x128) hold both eyes,
the brows and the lower forehead, and stop above the tip of the nose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from splitfed.errors import ConfigError

Point = tuple[float, float]


@dataclass(frozen=True)
class CropSpec:
    out_h: int = 64
    out_w: int = 128
    width: float = 2.4  # box width in inter-ocular distances
    up: float = 0.8  # how far the box reaches above the eye line, in inter-ocular distances

    @property
    def height(self) -> float:
        """Box height in inter-ocular distances."""
        return self.width * self.out_h / self.out_w

    def eye_positions(self) -> tuple[Point, Point]:
        """Where the two eyes land in the crop (pixels), by construction."""
        x_off = self.out_w * (0.5 - 0.5 / self.width)
        y = self.out_h * self.up / self.height
        return (x_off, y), (self.out_w - x_off, y)


def parse_size(text: str) -> tuple[int, int]:
    """``64x128`` -> (64, 128), height x width; a ConfigError (it comes from ``--size``) otherwise."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r} is not HEIGHTxWIDTH; give e.g. --size 64x128") from None
    if h < 8 or w < 8:
        raise ConfigError(f"--size {text!r} is too small; use at least 8x8")
    return h, w


def order_eyes(a: Point, b: Point) -> tuple[Point, Point]:
    """The eye on the image's left first (mirrored photos and detector conventions differ)."""
    return (a, b) if a[0] <= b[0] else (b, a)


def crop_to_source(eye_a: Point, eye_b: Point, spec: CropSpec) -> np.ndarray:
    """2x3 affine matrix mapping crop pixels to source pixels (for cv2.WARP_INVERSE_MAP)."""
    (x1, y1), (x2, y2) = order_eyes(eye_a, eye_b)
    dx, dy = x2 - x1, y2 - y1
    iod = math.hypot(dx, dy)
    if iod < 1e-6:
        raise ValueError("the two eye positions coincide")
    e = np.array([dx, dy]) / iod  # along the eye line
    n = np.array([-e[1], e[0]])  # perpendicular, pointing down in the image
    scale = spec.out_w / (spec.width * iod)  # crop pixels per source pixel
    mid = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    origin = mid - (spec.width * iod / 2) * e - spec.up * iod * n
    return np.column_stack([e / scale, n / scale, origin])


def source_to_crop(eye_a: Point, eye_b: Point, spec: CropSpec) -> np.ndarray:
    """2x3 affine matrix mapping source pixels to crop pixels (to project keypoints)."""
    m = crop_to_source(eye_a, eye_b, spec)
    a_inv = np.linalg.inv(m[:, :2])
    return np.column_stack([a_inv, -a_inv @ m[:, 2]])


def project(matrix: np.ndarray, point: Point) -> Point:
    x, y = matrix @ np.array([point[0], point[1], 1.0])
    return float(x), float(y)


def tilt_degrees(eye_a: Point, eye_b: Point) -> float:
    (x1, y1), (x2, y2) = order_eyes(eye_a, eye_b)
    return math.degrees(math.atan2(y2 - y1, x2 - x1))


def warp(image: np.ndarray, eye_a: Point, eye_b: Point, spec: CropSpec) -> np.ndarray:
    """The levelled eye-region crop of ``image`` (H x W x C, any dtype cv2 handles)."""
    import cv2

    m = crop_to_source(eye_a, eye_b, spec)
    return cv2.warpAffine(
        image, m, (spec.out_w, spec.out_h), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
