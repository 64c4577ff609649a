"""``splitfed preprocess kdef|folder SRC DST`` (also the stand-alone ``eye-crop`` command)."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from splitfed.errors import ConfigError, SplitFedError

from . import kdef
from .geometry import CropSpec, parse_size

if TYPE_CHECKING:  # the pipeline (numpy and friends) loads only when a run starts, not for --help
    from .pipeline import Options


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


def _angles(text: str) -> tuple[str, ...]:
    angles = tuple(a.strip().upper() for a in text.split(",") if a.strip())
    bad = [a for a in angles if a not in kdef.ANGLES]
    if bad or not angles:
        what = f"unknown angle(s) {','.join(bad)}" if bad else "no angle given"
        raise ConfigError(f"--angles {text!r}: {what}; choose from {','.join(kdef.ANGLES)}")
    return angles


def _spec(args: argparse.Namespace) -> CropSpec:
    h, w = parse_size(args.size)
    if not (math.isfinite(args.width) and args.width > 0):
        raise ConfigError(f"--width {args.width} must be a positive number of inter-ocular distances (default 2.4)")
    if not math.isfinite(args.up):
        raise ConfigError(f"--up {args.up} must be a finite number of inter-ocular distances (default 0.8)")
    return CropSpec(h, w, args.width, args.up)


def options_from_args(args: argparse.Namespace) -> Options:
    """The pipeline's Options from parsed flags; a bad value is a ConfigError that names its flag."""
    from .pipeline import Options

    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give a number of processes, or 0 for one per core")
    return Options(
        mode=args.source_kind,
        spec=_spec(args),
        color=args.color,
        angles=_angles(getattr(args, "angles", "S")),
        workers=args.workers,
        force=args.force,
        fallback=not args.no_fallback,
        face_model=args.face_model,
        include_akdef=getattr(args, "include_akdef", False),
        progress=not args.quiet,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Crop as the flags say; print the summary to stderr and the manifest's path last, on stdout."""
    from .manifest import summary_text
    from .pipeline import run

    run(args.src, args.dst, options_from_args(args))
    print(summary_text(args.dst), file=sys.stderr)
    print(args.dst / "manifest.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eye-crop",
        description="Crop the eye region (eyes, brows, lower "
        "forehead) of face photos and write a dataset `splitfed run --data` loads.",
    )
    from splitfed import __version__

    parser.add_argument("--version", action="version", version=f"eye-crop (splitfed {__version__})")
    add_arguments(parser)
    args = parser.parse_args(argv)  # usage errors exit 2, as argparse does
    logging.basicConfig(level=logging.WARNING)
    try:
        return run_from_args(args)
    except SplitFedError as exc:  # every expected failure is one; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
