"""Eye-crop throughput, end to end, on KDEF-sized (562x762) real face photos.

    python benchmarks/preprocess_speed.py [--images 400] [--workers 0]

Builds a KDEF-style tree of padded, rotated, mirrored and scaled copies of the real face
photos that ship with scikit-image and matplotlib, then times `splitfed preprocess kdef`
(detection, levelling, cropping, PNG writing, manifest, report and contact sheet).
Not a test: the figure goes into the issue notes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import kdef_tree  # noqa: E402
from splitfed.preprocessing.kdef import EXPRESSIONS  # noqa: E402
from splitfed.preprocessing.pipeline import Options, run  # noqa: E402


def build(root: Path, n: int) -> None:
    faces = kdef_tree.real_faces()
    pictures = [img for photo in faces.values() for img in kdef_tree.variants(photo).values()]
    codes, angles = list(EXPRESSIONS), ["S", "HL", "HR"]
    for i in range(n):
        person = 1 + i // (len(codes) * len(angles) * 2) % 35
        stem = f"{'AB'[i % 2]}F{person:02d}{codes[i // 2 % len(codes)]}{angles[i // 14 % 3]}"
        folder = root / stem[:4]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.JPG"
        k = 0
        while path.exists():  # keep every file, even where the name pattern repeats
            k += 1
            path = root / f"extra{k}" / f"{stem}.JPG"
            path.parent.mkdir(exist_ok=True)
        pictures[i % len(pictures)].save(path, quality=92)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--workers", type=int, default=0, help="0 = cores")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "out"
        build(src, args.images)
        t0 = time.perf_counter()
        run(src, dst, Options(workers=args.workers, progress=False))
        wall = time.perf_counter() - t0
        report = json.loads((dst / "report.json").read_text())
    n = report["total_crops"]
    print(
        f"{n} crops from {args.images} photos of 562x762 in {wall:.1f} s: {n / wall:.1f} images/s end to end "
        f"(workers: {args.workers or 'cores'}; methods {report['per_method']}; model route {report['model_route']})"
    )


if __name__ == "__main__":
    main()
