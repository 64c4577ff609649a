"""Datasets as a cheap index (labels, subjects, ids, paths) plus lazily loaded pixels.

Four sources, one shape:

* ``digits``: scikit-learn's bundled handwritten digits (1,797 real 8x8 images), the
  built-in default that needs no download;
* a processed folder with a ``manifest.csv`` (the contract in DESIGN.md: ``path``,
  ``label``, ``subject``, ``source``, ...), written by ``splitfed preprocess``;
* an image-folder tree, one sub-folder per class (CK+, FER-2013 exported as images);
* a function of the user's, by import path (``package.module:name`` or
  ``path/to/file.py:name``), for data that is not images in folders (see
  :func:`_from_factory` for what it may return).

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
from splitfed.imports import is_import_path, load_object

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
    shape: tuple[int, ...]  # of one example: (channels, height, width) for images, (features,) for a table
    paths: list[Path] | None = None  # image files; None when pixels are in memory
    pixels: np.ndarray | None = None  # (N, C, H, W) float32 in [0, 1] for in-memory sets
    features: torch.Tensor | None = None  # (N, ...) float32 from a user's function, used as they are
    kind: str = "images"  # "images" (folders, manifests), "digits" (built-in) or "custom" (a user's function)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels (normalised to mean 0, range [-1, 1]) and labels of the given rows only."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.features is not None:  # a user's rows: no rescaling, they come as the function made them
            return self.features[torch.from_numpy(rows)], torch.from_numpy(self.labels[rows].astype(np.int64))
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
    """``digits``, a folder (with ``manifest.csv``, or one sub-folder per class), or an import path."""
    if source == BUILTIN:
        return _digits()
    if is_import_path(source) and not Path(source).expanduser().exists():
        return _from_factory(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset {source!r} not found. Use --data digits (built-in), a folder made by `splitfed preprocess`, "
            "or a function of yours (package.module:name or path/to/file.py:name)"
        )
    if not path.is_dir():
        raise DataError(
            f"dataset {source!r} is a file; --data takes a folder with manifest.csv or one sub-folder per class"
        )
    if (path / MANIFEST).exists():
        return _manifest(path)
    return _image_folder(path)


def _digits_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn (which takes seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("--data digits needs scikit-learn, which holds the built-in data: bash scripts/setup.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def _digits() -> DatasetIndex:
    """The rows ``sklearn.datasets.load_digits`` returns (a test checks they are equal), read from its file."""
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float32)
    pixels = (table[:, :-1].reshape(-1, 8, 8) / 16.0)[:, None, :, :]
    labels = table[:, -1].astype(np.int64)
    return DatasetIndex(
        name=BUILTIN,
        classes=[str(c) for c in range(10)],
        labels=labels,
        ids=[f"digit-{i:04d}" for i in range(len(labels))],
        subjects=None,
        shape=(1, 8, 8),
        pixels=pixels,
        kind="digits",
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


def _from_factory(source: str) -> DatasetIndex:
    """Call the user's function (no arguments) and index the rows it returns. It may return:

    * a dict with ``x`` (N, ...) and ``y`` (N,), and optionally ``subjects`` (N person or
      group ids, for ``--partition subject`` / ``--test-split subject``), ``ids`` (N unique
      row ids) and ``classes`` (the name of each label);
    * a tuple ``(x, y)`` or ``(x, y, subjects)``;
    * a ``torch.utils.data.Dataset`` whose items are ``(x, y)`` or ``(x, y, subject)``
      (read once, into memory; a ``classes`` attribute names the labels, as torchvision's do).

    ``x`` is used as it is (tensors or arrays of numbers: no rescaling); labels may be any
    values, which become the classes in sorted order unless ``classes`` names them.
    """
    function = load_object(source, "--data")
    try:
        made = function()
    except Exception as exc:
        raise DataError(f"--data {source} failed when called: {type(exc).__name__}: {exc}") from exc
    classes_given = made.get("classes") if isinstance(made, dict) else getattr(made, "classes", None)
    x, y, subjects, ids = _rows_of(source, made)
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"--data {source} returned {len(x)} example(s) and {len(y)} label(s); need as many, and some")
    for name, values in (("subjects", subjects), ("ids", ids)):
        if values is not None and len(values) != len(y):
            raise DataError(f"--data {source} returned {len(values)} {name} for {len(y)} rows")
    values = [v.item() if hasattr(v, "item") else v for v in y]
    if classes_given is not None and all(isinstance(v, int) for v in values):
        classes = [str(c) for c in classes_given]
        if min(values) < 0 or max(values) >= len(classes):
            raise DataError(f"--data {source}: labels run {min(values)}..{max(values)} but {len(classes)} classes")
        labels = np.asarray(values, dtype=np.int64)
    else:
        order = sorted(set(values))
        classes = [str(c) for c in order]
        labels = np.asarray([order.index(v) for v in values], dtype=np.int64)
    ids = [str(i) for i in ids] if ids is not None else [f"row-{i:06d}" for i in range(len(labels))]
    if len(set(ids)) != len(ids):
        raise DataError(f"--data {source} returned ids that are not unique")
    return DatasetIndex(
        name=source,
        classes=classes,
        labels=labels,
        ids=ids,
        subjects=[str(s) for s in subjects] if subjects is not None else None,
        shape=tuple(x.shape[1:]),
        features=x,
        kind="custom",
    )


def _rows_of(source: str, made: object) -> tuple[torch.Tensor, list, list | None, list | None]:
    """``(x as float32 tensor, labels, subjects or None, ids or None)`` from what a data function returned."""
    subjects = ids = None
    if isinstance(made, dict):
        missing = {"x", "y"} - set(made)
        if missing:
            raise DataError(f"--data {source} returned a dict without {sorted(missing)}; give x and y")
        x, y, subjects, ids = made["x"], made["y"], made.get("subjects"), made.get("ids")
    elif isinstance(made, tuple) and len(made) in (2, 3):
        x, y = made[0], made[1]
        subjects = made[2] if len(made) == 3 else None
    elif isinstance(made, torch.utils.data.Dataset) and hasattr(made, "__len__"):
        items = [made[i] for i in range(len(made))]
        if not items or not all(isinstance(it, (tuple, list)) and len(it) in (2, 3) for it in items):
            raise DataError(f"--data {source}: the Dataset's items must be (x, y) or (x, y, subject)")
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = [it[1] for it in items]
        subjects = [it[2] for it in items] if len(items[0]) == 3 else None
    else:
        raise DataError(
            f"--data {source} returned {type(made).__name__}; return a dict with x and y, a tuple (x, y), "
            "or a torch.utils.data.Dataset of (x, y) pairs"
        )
    try:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"--data {source}: x is not an array of numbers: {exc}") from exc
    if x.ndim < 2:
        raise DataError(f"--data {source}: x has shape {tuple(x.shape)}; give one row per example, (N, ...)")
    y = y.tolist() if hasattr(y, "tolist") else list(y)
    return x, y, (list(subjects) if subjects is not None else None), (list(ids) if ids is not None else None)
