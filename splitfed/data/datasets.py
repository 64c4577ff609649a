"""Datasets as a cheap index (labels, subjects, ids, paths) plus lazily loaded pixels.

Three sources, one shape:

* ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images), the
  built-in default that needs no download;
* a processed folder with a ``manifest.csv`` (the contract in DESIGN.md: ``path``,
  ``label``, ``subject``, ``source``, ...), written by ``splitfed preprocess``;
* an image-folder tree, one sub-folder per class (CK+, FER-2013 exported as images).

Every party builds the same index from the same source and seed, then loads pixels
only for the rows it owns (:meth:`DatasetIndex.load`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from splitfed.errors import DataError

log = logging.getLogger(__name__)

BUILTIN = "digits"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif"}
MANIFEST = "manifest.csv"


@dataclass
class DatasetIndex:
    """What every party knows about a dataset before loading any pixels."""

    name: str
    classes: list[str]
    labels: np.ndarray  # int64 class index per row
    ids: list[str]  # a stable string id per row (PyVertical aligns on these)
    subjects: list[str] | None  # person id per row, or None when unknown
    shape: tuple[int, int, int]  # (channels, height, width) of one image
    paths: list[Path] | None = None  # image files; None when pixels are in memory
    pixels: np.ndarray | None = None  # (N, C, H, W) float32 in [0, 1] for in-memory sets

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (normalised to mean 0, range [-1, 1]) and labels of the given rows only."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.pixels is not None:
            x = self.pixels[rows]
        else:
            assert self.paths is not None
            x = (
                np.stack([_read_image(self.paths[i], self.shape) for i in rows])
                if len(rows)
                else np.zeros((0, *self.shape), np.float32)
            )
        x = torch.from_numpy((np.asarray(x, dtype=np.float32) - 0.5) / 0.5)
        return x, torch.from_numpy(self.labels[rows].astype(np.int64))


def load_index(source: str) -> DatasetIndex:
    """``digits`` or a folder (with ``manifest.csv``, or one sub-folder per class)."""
    if source == BUILTIN:
        return _digits()
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {source!r} not found. Use --data digits (built-in) or a folder made by `splitfed preprocess`"
        )
    if not path.is_dir():
        raise DataError(
            f"dataset {source!r} is a file; --data takes a folder with manifest.csv or one sub-folder per class"
        )
    if (path / MANIFEST).exists():
        return _manifest(path)
    return _image_folder(path)


def _digits() -> DatasetIndex:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    return DatasetIndex(
        name=BUILTIN,
        classes=[str(c) for c in bunch.target_names],
        labels=labels,
        ids=[f"digit-{i:04d}" for i in range(len(labels))],
        subjects=None,
        shape=(1, 8, 8),
        pixels=pixels,
    )


def _manifest(root: Path) -> DatasetIndex:
    with open(root / MANIFEST, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DataError(f"{root / MANIFEST} has no rows; re-run `splitfed preprocess`")
    missing = {"path", "label"} - set(rows[0])
    if missing:
        raise DataError(f"{root / MANIFEST} lacks the column(s) {sorted(missing)}; see the data contract in DESIGN.md")
    paths = [root / r["path"] for r in rows]
    absent = [p for p in paths if not p.exists()]
    if absent:
        raise DataError(f"{len(absent)} image(s) listed in {root / MANIFEST} do not exist, e.g. {absent[0]}")
    classes = sorted({r["label"] for r in rows})
    has_subject = "subject" in rows[0] and all(r["subject"] for r in rows)
    ids = [Path(r.get("source") or r["path"]).stem for r in rows]
    if len(set(ids)) != len(ids):
        ids = [r["path"] for r in rows]
    return DatasetIndex(
        name=str(root),
        classes=classes,
        labels=np.array([classes.index(r["label"]) for r in rows], dtype=np.int64),
        ids=ids,
        subjects=[r["subject"] for r in rows] if has_subject else None,
        shape=_probe_shape(paths[0]),
        paths=paths,
    )


def _image_folder(root: Path) -> DatasetIndex:
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = [(d.name, f) for d in class_dirs for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(
            f"{root} has neither {MANIFEST} nor class sub-folders with images. "
            "Make one with `splitfed preprocess`, or lay images out as ROOT/<class>/<image>"
        )
    classes = sorted({c for c, _ in files})
    return DatasetIndex(
        name=str(root),
        classes=classes,
        labels=np.array([classes.index(c) for c, _ in files], dtype=np.int64),
        ids=[str(f.relative_to(root)) for _, f in files],
        subjects=None,
        shape=_probe_shape(files[0][1]),
        paths=[f for _, f in files],
    )


def _probe_shape(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        channels = 1 if im.mode in ("L", "I", "I;16", "1", "P") else 3
        return channels, im.height, im.width


def _read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    channels, height, width = shape
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (width, height):
                im = im.resize((width, height), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
