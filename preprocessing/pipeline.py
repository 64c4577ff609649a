"""Photos in, eye-region crops + manifest.csv + report.json + contact_sheet.png out.

``kdef`` mode parses KDEF names (label, person, session, angle); ``folder`` mode takes
the label from the first sub-folder. Work is spread over ``workers`` processes, each
with its own detector. A run is resumable: crops already listed in the manifest are
kept, and files that failed before (same size and modification time) are not retried,
so a second run is a no-op; ``force`` redoes everything. The manifest and report are
written atomically, so an interrupted run never leaves a corrupt one. OpenCV and
MediaPipe (the ``preprocess`` extra) are imported here first, so a missing one is one
clear error, not a pool of workers failing one after another.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitfed.errors import DataError
from splitfed.files import atomic_write_bytes

from . import kdef
from .geometry import CropSpec, project, source_to_crop, warp
from .manifest import previous_run, stamp, write_manifest, write_report
from .workers import map_in_workers, start_in_process

log = logging.getLogger(__name__)

BLANK_STD = 2.0
#: Fallback eye positions as fractions of (width, height) for standardised KDEF photos,
#: used only for an angle with no detected photo in the run to learn from. Rough values
#: read off the published layout, not measured here: the run's own detections take over.
KDEF_EYE_PRIORS = {
    "S": ((0.37, 0.44), (0.63, 0.44)),
    "HL": ((0.40, 0.44), (0.62, 0.44)),
    "HR": ((0.38, 0.44), (0.60, 0.44)),
}


@dataclass(frozen=True)
class Options:
    mode: str = "kdef"  # or "folder"
    spec: CropSpec = CropSpec()
    color: bool = False
    angles: tuple[str, ...] = kdef.DEFAULT_ANGLES
    workers: int = 0  # 0 = cores
    force: bool = False
    fallback: bool = True
    face_model: str | None = None
    include_akdef: bool = False
    progress: bool = True


@dataclass
class Item:
    source: Path
    rel: str  # source path relative to SRC
    out_rel: str  # crop path relative to DST
    meta: dict[str, str]


@dataclass
class Report:
    processed: int = 0
    kept_from_before: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    excluded: int = 0
    odd_size: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_route: str = ""
    model_sha256: str = ""
    #: how every crop was made, so that `splitfed predict` crops new photos the same way
    crop: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- listing


def list_items(src: Path, options: Options) -> tuple[list[Item], list[dict[str, str]], int]:
    """(items to crop, failures found from the names alone, number excluded by angle)."""
    items, failures, excluded = [], [], 0
    if options.mode == "kdef":
        for path in kdef.find_photos(src, options.include_akdef):
            rel = str(path.relative_to(src))
            name = kdef.parse_name(path)
            if name is None:
                failures.append({"file": rel, "reason": "name does not follow the KDEF pattern (e.g. AF01ANS.JPG)"})
                continue
            if name.angle not in options.angles:
                excluded += 1
                continue
            meta = {
                "label": name.label,
                "subject": name.subject,
                "session": name.session,
                "gender": name.gender,
                "angle": name.angle,
            }
            items.append(Item(path, rel, f"{name.label}/{path.stem.upper()}.png", meta))
    else:
        for path in sorted(src.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"):
                continue
            rel_parts = path.relative_to(src).parts
            if len(rel_parts) < 2:
                failures.append({"file": str(path.relative_to(src)), "reason": "not inside a class sub-folder"})
                continue
            label = rel_parts[0]
            stem = "_".join(rel_parts[1:])
            meta = {"label": label, "subject": "", "session": "", "gender": "", "angle": ""}
            items.append(Item(path, str(path.relative_to(src)), f"{label}/{Path(stem).stem}.png", meta))
    return items, failures, excluded


# ---------------------------------------------------------------- one image (runs in a worker)

_FINDER = None


def _init_worker(short: str, full: str | None) -> None:
    """Give this process its own detector (MediaPipe's are not shared across processes)."""
    global _FINDER
    import cv2

    cv2.setNumThreads(1)
    from .detector import EyeFinder

    _FINDER = EyeFinder(short, full)


def read_rgb(path: Path) -> np.ndarray | None:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def save_crop(rgb: np.ndarray, eyes: Any, dst: Path, out_rel: str, spec: CropSpec, color: bool) -> None:
    import cv2

    crop = warp(rgb, eyes[0], eyes[1], spec)
    crop = crop if color else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    ok, png = cv2.imencode(".png", crop if not color else cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {out_rel}")
    atomic_write_bytes(dst / out_rel, png.tobytes())


def process_one(args: tuple[Item, str, CropSpec, bool, bool]) -> dict[str, Any]:
    """Detect, level, crop and save one photo; return a manifest row or a failure."""
    item, dst, spec, color, fallback = args
    rgb = read_rgb(item.source)
    if rgb is None:
        return {"failure": "unreadable image (corrupt or not an image file)", "item": item}
    h, w = rgb.shape[:2]
    if float(rgb.std()) < BLANK_STD:
        return {"failure": f"blank image (all pixels about {int(rgb.mean())})", "item": item}
    found = _FINDER.find(rgb, fallback=fallback)
    if found is None:
        return {"missed": True, "item": item, "size": (w, h)}
    try:
        save_crop(rgb, found.eyes, Path(dst), item.out_rel, spec, color)
    except ValueError as exc:  # eyes the crop geometry cannot use (they coincide): this photo fails, not the run
        return {"failure": f"no usable eye positions ({exc})", "item": item}
    return {
        "item": item,
        "size": (w, h),
        "method": found.method,
        "bbox": found.bbox,
        "score": found.score,
        "eyes": found.eyes,
    }


# ---------------------------------------------------------------- the run


def run(src: Path, dst: Path, options: Options) -> Report:
    from .detector import require_extra, resolve_models

    started = time.monotonic()
    src, dst = Path(src), Path(dst)
    require_extra()
    if not src.is_dir():
        raise DataError(f"{src} is not a folder of photos; give the folder that holds them (it is walked recursively)")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {dst} ({exc.strerror or exc}); choose another DST") from None
    items, failures, excluded = list_items(src, options)
    old_rows, old_failures = ({}, {}) if options.force else previous_run(dst)
    todo, kept = [], []
    for it in items:
        prior = old_rows.get(it.rel)
        if prior is not None and (dst / prior["path"]).exists():
            kept.append(prior)
        elif it.rel in old_failures and old_failures[it.rel]["stamp"] == stamp(it.source):
            failures.append({k: v for k, v in old_failures[it.rel].items()})
        else:
            todo.append(it)
    short, full = resolve_models(options.face_model)
    report = Report(kept_from_before=len(kept), excluded=excluded, model_route=short.route, model_sha256=short.sha256)
    report.crop = crop_record(options.spec, options.color)
    results = _map(todo, dst, options, str(short.path), str(full.path) if full else None)
    rows, missed = list(kept), []
    for res in results:
        item = res["item"]
        if "failure" in res:
            failures.append({"file": item.rel, "reason": res["failure"], "stamp": stamp(item.source)})
            continue
        if res["size"] != (562, 762) and options.mode == "kdef":
            report.odd_size.append(f"{item.rel} ({res['size'][0]}x{res['size'][1]})")
        if res.get("missed"):
            missed.append(res)
            continue
        rows.append(_row(item, res))
    rows += _fixed_box_pass(missed, rows, dst, options, failures)
    report.processed = len(rows) - len(kept)
    report.failures = sorted(failures, key=lambda f: f["file"])
    report.seconds = time.monotonic() - started
    write_manifest(dst, rows)
    write_report(dst, rows, report, len(todo))
    from .contact_sheet import contact_sheet

    if rows:
        contact_sheet(dst, rows, dst / "contact_sheet.png")
    return report


def crop_record(spec: CropSpec, color: bool) -> dict[str, Any]:
    return {"height": spec.out_h, "width": spec.out_w, "box_width": spec.width, "up": spec.up, "color": color}


def crop_from_record(record: dict[str, Any]) -> tuple[CropSpec, bool]:
    spec = CropSpec(out_h=int(record["height"]), out_w=int(record["width"]), width=record["box_width"], up=record["up"])
    return spec, bool(record["color"])


def _map(todo: list[Item], dst: Path, options: Options, short: str, full: str | None) -> Iterable[dict[str, Any]]:
    workers = options.workers or os.cpu_count() or 1
    args = [(it, str(dst), options.spec, options.color, options.fallback) for it in todo]
    if not args:
        return []
    bar = _progress(len(args), options.progress)
    if workers == 1:
        start_in_process(_init_worker, (short, full))
        stream: Iterable[dict[str, Any]] = map(process_one, args)
    else:
        stream = map_in_workers(process_one, args, workers, _init_worker, (short, full))
    out = []
    try:
        for res in stream:
            out.append(res)
            bar(1)
    finally:
        if workers == 1:
            _close_worker()  # not left to the interpreter's exit, where MediaPipe's own cleanup fails loudly
    return out


def _close_worker() -> None:
    global _FINDER
    if _FINDER is not None:
        _FINDER.close()
        _FINDER = None


def _progress(total: int, enabled: bool):
    if not enabled:
        return lambda n: None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="cropping")
        return bar.update
    state = {"done": 0, "next": max(1, total // 10)}

    def step(n: int) -> None:
        state["done"] += n
        if state["done"] >= state["next"] or state["done"] == total:
            print(f"cropping: {state['done']}/{total}", file=sys.stderr, flush=True)
            state["next"] += max(1, total // 10)

    return step


def _row(item: Item, res: dict[str, Any]) -> dict[str, str]:
    (ax, ay), (bx, by) = res["eyes"]
    return {
        "path": item.out_rel,
        "source": item.rel,
        **item.meta,
        "method": res["method"],
        "bbox": ",".join(str(int(v)) for v in res["bbox"]),
        "score": f"{res['score']:.3f}",
        "eyes": f"{ax:.1f},{ay:.1f},{bx:.1f},{by:.1f}",
    }


def _fixed_box_pass(
    missed: list[dict], rows: list[dict], dst: Path, options: Options, failures: list[dict[str, str]]
) -> list[dict[str, str]]:
    """KDEF only: photos are standardised, so a miss takes the eye positions typical of its angle."""
    out = []
    for res in missed:
        item = res["item"]
        if options.mode != "kdef" or not options.fallback:
            failures.append({"file": item.rel, "reason": "no face found", "stamp": stamp(item.source)})
            continue
        w, h = res["size"]
        (ax, ay), (bx, by) = typical_eyes(rows, item.meta["angle"])
        eyes = ((ax * w, ay * h), (bx * w, by * h))
        save_crop(read_rgb(item.source), eyes, dst, item.out_rel, options.spec, options.color)
        out.append(_row(item, {"method": "kdef-fixed", "bbox": (0, 0, w, h), "score": 0.0, "eyes": eyes}))
    return out


def typical_eyes(rows: list[dict[str, str]], angle: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median detected eye positions (fractions of the 562x762 frame) of this angle; the prior if none."""
    seen = [
        [float(v) for v in r["eyes"].split(",")]
        for r in rows
        if r.get("angle") == angle and r.get("method", "").startswith("mediapipe")
    ]
    if not seen:
        return KDEF_EYE_PRIORS.get(angle, KDEF_EYE_PRIORS["S"])
    med = [statistics.median(col) for col in zip(*seen, strict=True)]
    return (med[0] / 562, med[1] / 762), (med[2] / 562, med[3] / 762)


def eye_positions_in_crop(row: dict[str, str], spec: CropSpec) -> tuple[tuple[float, float], tuple[float, float]]:
    """Project a row's detected eyes into its crop's pixel coordinates (for checks and tests)."""
    ax, ay, bx, by = (float(v) for v in row["eyes"].split(","))
    m = source_to_crop((ax, ay), (bx, by), spec)
    return project(m, (ax, ay)), project(m, (bx, by))
