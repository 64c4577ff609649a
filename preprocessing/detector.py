"""Face and eye finding with MediaPipe's BlazeFace, through the MediaPipe Tasks API.

Two passes: the short-range model, then (as a fallback) the full-range model. Each
detection gives a face box and six keypoints; we use the two eyes.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from splitfed.errors import ConfigError

from . import face_model

log = logging.getLogger(__name__)


Eyes = tuple[tuple[float, float], tuple[float, float]]


def _eyes(detection: Any, x0: int, y0: int, w: int, h: int) -> Eyes:
    """The two eye keypoints in pixels of the full photo, image-left eye first."""
    kp = detection.keypoints
    a, b = (x0 + kp[0].x * w, y0 + kp[0].y * h), (x0 + kp[1].x * w, y0 + kp[1].y * h)
    return (a, b) if a[0] <= b[0] else (b, a)


@dataclass(frozen=True)
class Found:
    eyes: tuple[tuple[float, float], tuple[float, float]]  # pixels, image-left eye first
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels
    score: float
    method: str  # which pass found it


INSTALL_HINT = "install the preprocess extra: pip install 'splitfed[preprocess]' (or run bash scripts/setup.sh)"


def _missing(module: str, exc: ImportError) -> ConfigError:
    cause = " ".join(str(exc).split()) or type(exc).__name__
    return ConfigError(f"{module} cannot be imported ({cause}); {INSTALL_HINT}")


def require_extra() -> None:
    """Import OpenCV and MediaPipe here, so a missing extra is one clear error before any worker starts.

    A real import, not just a look-up: an installed package can still fail to load (a
    missing system library, a broken wheel), and a worker would then fail the same way.
    """
    try:
        import cv2  # noqa: F401 - mediapipe brings opencv-contrib-python, the only cv2 we use
    except ImportError as exc:
        raise _missing("cv2 (OpenCV)", exc) from None
    _mediapipe()


def _mediapipe():
    # MediaPipe's C++ side logs every model load to stderr; keep warnings and errors only.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core import base_options
    except ImportError as exc:
        raise _missing("mediapipe", exc) from None
    return mp, vision, base_options


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class EyeFinder:
    """Holds one detector per model; create one per worker process."""

    def __init__(self, short_model: str, full_model: str | None, min_confidence: float = 0.5) -> None:
        mp, vision, base_options = _mediapipe()
        self._mp, self._warm = mp, False

        def make(path: str):
            opts = vision.FaceDetectorOptions(
                base_options=base_options.BaseOptions(model_asset_path=path), min_detection_confidence=min_confidence
            )
            try:
                return vision.FaceDetector.create_from_options(opts)
            except (ValueError, RuntimeError, OSError) as exc:  # what MediaPipe raises for a file it cannot use
                cause = " ".join(str(exc).split())
                raise ConfigError(
                    f"the face detector cannot load {path} ({cause}); give a BlazeFace .tflite file with --face-model"
                ) from None

        with _quiet_stderr():  # LiteRT prints INFO lines straight to fd 2 while loading models
            self.passes = [("mediapipe-short", make(short_model))]
            if full_model:
                self.passes.append(("mediapipe-full", make(full_model)))

    def _detect(self, detector: Any, rgb: np.ndarray) -> Any:
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        self._warm, warm = True, self._warm
        with _quiet_stderr() if not warm else contextlib.nullcontext():
            detections = detector.detect(image).detections  # the first call logs an alignment notice
        return max(detections, key=lambda d: d.categories[0].score) if detections else None

    def find(self, rgb: np.ndarray, *, fallback: bool = True) -> Found | None:
        """The most confident face's eyes, or None.

        The detector sees the whole photo at 128x128, where a face a fifth of the frame
        wide is ~25 pixels and its eye keypoints are coarse; so a second look at a square
        around the face (which then fills the detector's input) refines the eyes.
        """
        for method, detector in self.passes if fallback else self.passes[:1]:
            best = self._detect(detector, rgb)
            if best is None:
                continue
            box = best.bounding_box
            bbox = (box.origin_x, box.origin_y, box.width, box.height)
            eyes = self._refine(rgb, bbox) or _eyes(best, 0, 0, rgb.shape[1], rgb.shape[0])
            return Found(eyes, bbox, float(best.categories[0].score), method)
        return None

    def _refine(self, rgb: np.ndarray, bbox: tuple[int, int, int, int]) -> Eyes | None:
        h, w = rgb.shape[:2]
        x, y, bw, bh = bbox
        side = int(max(bw, bh) * 2.0)
        x0, y0 = max(0, x + bw // 2 - side // 2), max(0, y + bh // 2 - side // 2)
        x1, y1 = min(w, x0 + side), min(h, y0 + side)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        best = self._detect(self.passes[0][1], rgb[y0:y1, x0:x1])
        return None if best is None else _eyes(best, x0, y0, x1 - x0, y1 - y0)

    def close(self) -> None:
        for _, detector in self.passes:
            detector.close()


def resolve_models(explicit: str | None) -> tuple[face_model.ResolvedModel, face_model.ResolvedModel | None]:
    short = face_model.resolve(face_model.SHORT, explicit)
    try:
        full = face_model.resolve(face_model.FULL, allow_download=False)
    except face_model.ModelNotFoundError as exc:
        log.warning("no full-range model for the second pass: %s", exc)
        full = None
    return short, full
