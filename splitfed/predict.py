"""``splitfed predict RUN PHOTO...``: the whole application, from a face photo to an emotion.

Each photo goes through the same eye-region cropper as the training data (BlazeFace,
eyes levelled, the same box), then through the run's model. The crop settings come from
the ``report.json`` that ``splitfed preprocess`` wrote beside the training crops; without
one, the default box at the run's input size. A photo without a detectable face is
refused, by name: a guess on a crop of nothing would be a lie.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitfed.errors import ConfigError, DataError
from splitfed.evaluate import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    photo: str
    label: str | None  # None when no face was found
    probabilities: dict[str, float]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"photo": self.photo, "label": self.label, "probabilities": self.probabilities, "error": self.error}


def crop_settings(model: LoadedModel) -> tuple[Any, bool, str]:
    """(CropSpec, colour, where they came from) for this run's input."""
    from splitfed.preprocessing.geometry import CropSpec
    from splitfed.preprocessing.pipeline import crop_from_record

    channels, height, width = _image_shape(model)
    report = Path(model.config.data) / "report.json"
    if report.is_file():
        record = json.loads(report.read_text()).get("crop")
        if record:
            spec, color = crop_from_record(record)
            if (spec.out_h, spec.out_w, 3 if color else 1) != (height, width, channels):
                raise ConfigError(
                    f"{report} describes {spec.out_h}x{spec.out_w} crops, but the run's input is {model.shape}"
                )
            return spec, color, str(report)
    return CropSpec(out_h=height, out_w=width), channels == 3, "the default eye box (no report.json with the data)"


def _image_shape(model: LoadedModel) -> tuple[int, int, int]:
    if len(model.shape) != 3 or model.shape[0] not in (1, 3):
        raise ConfigError(f"this run's model takes inputs of shape {model.shape}, not images: predict needs eye crops")
    return model.shape  # type: ignore[return-value]


def predict_photos(
    run: Path, photos: list[Path], *, checkpoint: str | Path | None = None, device: str = "cpu"
) -> list[Prediction]:
    """Crop each photo's eye region and classify it with the run's model."""
    from splitfed.preprocessing.detector import EyeFinder, require_extra, resolve_models
    from splitfed.preprocessing.geometry import warp
    from splitfed.preprocessing.pipeline import read_rgb

    require_extra()
    model = load_model(run, checkpoint=checkpoint, device=device)
    spec, color, source = crop_settings(model)
    log.info("cropping as %s: %dx%d, box %.2f IODs wide", source, spec.out_h, spec.out_w, spec.width)
    short, full = resolve_models(None)
    finder = EyeFinder(str(short.path), str(full.path) if full else None)
    results = []
    try:
        for photo in photos:
            rgb = read_rgb(photo) if Path(photo).is_file() else None
            if rgb is None:
                results.append(Prediction(str(photo), None, {}, "not a readable image file"))
                continue
            found = finder.find(rgb)
            if found is None:
                results.append(Prediction(str(photo), None, {}, "no face found: give a photo with a visible face"))
                continue
            x = crop_tensor(warp(rgb, found.eyes[0], found.eyes[1], spec), color)
            with torch.no_grad():
                probs = torch.softmax(model.predict(x.to(device)), dim=1)[0].cpu()
            ranked = {model.classes[i]: float(probs[i]) for i in probs.argsort(descending=True).tolist()}
            results.append(Prediction(str(photo), next(iter(ranked)), ranked))
    finally:
        finder.close()
    return results


def crop_tensor(crop_rgb: np.ndarray, color: bool) -> torch.Tensor:
    """A crop as the training data loader gives it: (1, C, H, W), scaled to [-1, 1].

    The crop goes through an 8-bit grayscale (or RGB) image, as the preprocessing command
    saves it, so that a photo gives exactly the input its saved crop would.
    """
    import cv2

    image = crop_rgb if color else cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = arr.transpose(2, 0, 1) if color else arr[None]
    return torch.from_numpy((arr - 0.5) / 0.5)[None]


def require_some(predictions: list[Prediction]) -> None:
    if predictions and all(p.error for p in predictions):
        raise DataError("no photo could be classified: " + "; ".join(f"{p.photo}: {p.error}" for p in predictions))
