"""``splitfed preprocess kdef|folder SRC DST`` (also the stand-alone ``eye-crop`` command)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import kdef
from .geometry import CropSpec, parse_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="source_kind", metavar="KIND", required=True)
    for kind, text in (
        ("kdef", "the KDEF photo set (AF01ANS.JPG names; labels, people, sessions and angles from the names)"),
        ("folder", "any tree of face photos with one sub-folder per class (CK+, FER-2013 as images, your own)"),
    ):
        k = sub.add_parser(kind, help=text, description=f"Crop the eye region of {text}.")
        k.add_argument("src", type=Path, help="folder of photos (walked recursively)")
        k.add_argument("dst", type=Path, help="output folder: crops, manifest.csv, report.json, contact_sheet.png")
        k.add_argument("--size", default="64x128", help="crop size HEIGHTxWIDTH (default %(default)s)")
        k.add_argument("--color", action="store_true", help="keep RGB (default: grayscale)")
        k.add_argument("--workers", type=int, default=0, help=f"worker processes (default: cores = {os.cpu_count()})")
        k.add_argument("--force", action="store_true", help="redo every photo (default: skip what is done)")
        k.add_argument(
            "--no-fallback",
            action="store_true",
            help="a photo the first detector pass misses is a reported failure (no second pass, no fixed KDEF box)",
        )
        k.add_argument(
            "--face-model",
            default=None,
            help="a BlazeFace .tflite file (default: SPLITFED_FACE_MODEL, the cache, or fetched and "
            "verified automatically)",
        )
        k.add_argument(
            "--width",
            type=float,
            default=CropSpec.width,
            help="crop width in inter-ocular distances (default %(default)s)",
        )
        k.add_argument(
            "--up",
            type=float,
            default=CropSpec.up,
            help="how far the crop reaches above the eyes, in inter-ocular distances (default %(default)s)",
        )
        k.add_argument("--quiet", action="store_true", help="no progress output")
        if kind == "kdef":
            k.add_argument(
                "--angles",
                default=",".join(kdef.DEFAULT_ANGLES),
                help="angles to keep, of S,HL,HR,FL,FR (default %(default)s: full profiles show one eye)",
            )
            k.add_argument("--include-akdef", action="store_true", help="also process AKDEF averaged faces")


def run_from_args(args: argparse.Namespace) -> int:
    from .manifest import summary_text
    from .pipeline import Options, run

    h, w = parse_size(args.size)
    angles = tuple(a.strip().upper() for a in getattr(args, "angles", "S").split(",") if a.strip())
    bad = [a for a in angles if a not in kdef.ANGLES]
    if bad:
        raise SystemExit(f"error: unknown angle(s) {bad}; choose from {','.join(kdef.ANGLES)}")
    options = Options(
        mode=args.source_kind,
        spec=CropSpec(h, w, args.width, args.up),
        color=args.color,
        angles=angles,
        workers=args.workers,
        force=args.force,
        fallback=not args.no_fallback,
        face_model=args.face_model,
        include_akdef=getattr(args, "include_akdef", False),
        progress=not args.quiet,
    )
    run(args.src, args.dst, options)
    print(summary_text(args.dst), file=sys.stderr)
    print(args.dst / "manifest.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eye-crop",
        description="Crop the eye region (eyes, brows, lower "
        "forehead) of face photos and write a dataset `splitfed run --data` loads.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from splitfed.errors import SplitFedError

    try:
        return run_from_args(args)
    except (SplitFedError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
