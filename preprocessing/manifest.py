"""The files a preprocessing run writes and reads back: manifest.csv and report.json.

manifest.csv follows the data contract in DESIGN.md; both are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from splitfed.errors import DataError
from splitfed.files import atomic_write_bytes, atomic_write_json

MANIFEST_COLUMNS = [
    "path",
    "label",
    "subject",
    "source",
    "session",
    "gender",
    "angle",
    "method",
    "bbox",
    "score",
    "eyes",
]


def stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{int(st.st_mtime)}"


def previous_run(dst: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(rows by source, failures with a file stamp by file) of an earlier run into ``dst``, to resume it.

    Files that cannot be read back are a DataError that says how to start afresh, so a
    damaged earlier run never ends in a bare JSON or CSV error.
    """
    try:
        return _read_previous(dst)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error) as exc:
        raise DataError(
            f"cannot read the earlier run in {dst} ({type(exc).__name__}: {' '.join(str(exc).split())}); "
            "pass --force to redo every photo, or choose an empty DST"
        ) from None


def _read_previous(dst: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    rows: dict[str, dict] = {}
    if (dst / "manifest.csv").exists():
        rows = {r["source"]: r for r in read_manifest(dst)}
    fails: dict[str, dict] = {}
    if (dst / "report.json").exists():
        for f in json.loads((dst / "report.json").read_text()).get("failures", []):
            if "stamp" in f:
                fails[f["file"]] = f
    return rows, fails


def read_manifest(dst: Path) -> list[dict[str, str]]:
    with open(dst / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_manifest(dst: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["path"]))
    atomic_write_bytes(dst / "manifest.csv", buf.getvalue().encode("utf-8"))


def write_report(dst: Path, rows: list[dict[str, str]], report: Any, attempted: int) -> None:
    data = asdict(report)
    data["images_per_second"] = attempted / report.seconds if report.seconds > 0 and attempted else None
    data["total_crops"] = len(rows)
    data["per_class"] = dict(sorted(Counter(r["label"] for r in rows).items()))
    data["per_angle"] = dict(sorted(Counter(r.get("angle", "") for r in rows).items()))
    data["per_method"] = dict(sorted(Counter(r["method"] for r in rows).items()))
    atomic_write_json(dst / "report.json", data)


def summary_text(dst: Path) -> str:
    r = json.loads((dst / "report.json").read_text())
    lines = [
        f"crops: {r['total_crops']} ({r['processed']} new, {r['kept_from_before']} kept from an earlier run); "
        f"excluded by angle: {r['excluded']}; failures: {len(r['failures'])}",
        f"face model: {r['model_route']} (sha256 {r['model_sha256'][:12]}...)",
        f"per class: {r['per_class']}",
        f"per angle: {r['per_angle']}",
        f"per method: {r['per_method']}",
        f"time: {r['seconds']:.1f} s" + (f", {r['images_per_second']:.1f} images/s" if r["images_per_second"] else ""),
    ]
    lines += [f"  failed: {f['file']}: {f['reason']}" for f in r["failures"]]
    if r["odd_size"]:
        lines.append(f"  of another size (processed): {', '.join(r['odd_size'])}")
    return "\n".join(lines)
