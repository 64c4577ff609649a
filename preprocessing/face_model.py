"""Find the BlazeFace face-detection model file, verified by checksum.

MediaPipe wheels from 0.10.30 on no longer contain the model, and we do not commit
third-party model files. Routes, in order; the first that yields a verified file wins:

1. ``--face-model PATH`` or the ``SPLITFED_FACE_MODEL`` environment variable;
2. the user's cache (``$XDG_CACHE_HOME/splitfed/models``, default ``~/.cache/...``);
3. a download from Google's model storage when online (kept only if its sha256 is pinned below);
4. offline and on CI: the Apache-2.0 mediapipe 0.10.14 wheel, fetched with pip from the
   package index, which carries the model inside the package; we extract that one file.

Every file is checked against :data:`KNOWN_SHA256`. Cached results are written atomically.
The route used is reported, so a run can say where its detector came from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from splitfed.errors import ConfigError, SplitFedError
from splitfed.files import atomic_write_bytes

log = logging.getLogger(__name__)

#: sha256 of model files we have verified by hand. The wheel's models were checked on
#: 2026-11-24 (mediapipe-0.10.14-cp311 manylinux wheel).
KNOWN_SHA256 = {
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
}
WHEEL_VERSION = "0.10.14"
WHEEL_MEMBER = "mediapipe/modules/face_detection/{name}"
DOWNLOAD_URL = "https://storage.googleapis.com/mediapipe-models/face_detector/blaze_face_short_range/float16/1/blaze_face_short_range.tflite"
ENV = "SPLITFED_FACE_MODEL"
SHORT, FULL = "face_detection_short_range.tflite", "face_detection_full_range_sparse.tflite"


class ModelNotFoundError(SplitFedError):
    pass


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    route: str  # explicit, environment, cache, download, pip-wheel
    sha256: str


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "splitfed" / "models"


def resolve(name: str = SHORT, explicit: str | Path | None = None, *, allow_download: bool = True) -> ResolvedModel:
    """The model file ``name``, by the first route that yields a verified copy."""
    if name not in KNOWN_SHA256:
        raise ConfigError(f"unknown face model {name!r}; known: {sorted(KNOWN_SHA256)}")
    for route, given in (("explicit", explicit), ("environment", os.environ.get(ENV))):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"face model {path} ({route}) does not exist")
            digest = sha256(path)
            if digest not in KNOWN_SHA256.values():
                log.warning(
                    "face model %s has sha256 %s, which is not one we verified; using it as asked", path, digest
                )
            return ResolvedModel(path, route, digest)
    cached = cache_dir() / name
    if cached.is_file():
        if sha256(cached) == KNOWN_SHA256[name]:
            return ResolvedModel(cached, "cache", KNOWN_SHA256[name])
        log.warning("cached %s fails its checksum; fetching it again", cached)
        cached.unlink()
    errors = []
    fetchers = ([_download] if allow_download and name == SHORT else []) + [_from_wheel]
    for fetch in fetchers:
        try:
            data, route = fetch(name)
        except Exception as exc:  # each route may fail; the next is tried
            errors.append(f"{fetch.__name__.strip('_')}: {exc}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != KNOWN_SHA256[name]:
            errors.append(f"{route}: sha256 {digest} is not the pinned {KNOWN_SHA256[name]}; refused")
            continue
        atomic_write_bytes(cached, data)
        return ResolvedModel(cached, route, digest)
    raise ModelNotFoundError(
        f"no verified copy of {name} could be found ({'; '.join(errors)}). Give one with --face-model PATH or "
        f"{ENV}, or allow pip to fetch mediapipe=={WHEEL_VERSION} from the package index"
    )


def _download(name: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(DOWNLOAD_URL, timeout=10) as resp:  # noqa: S310 - a fixed https URL
        return resp.read(), "download"


def _from_wheel(name: str) -> tuple[bytes, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            f"mediapipe=={WHEEL_VERSION}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("mediapipe-*.whl"))
        if res.returncode != 0 or not wheels:
            raise ModelNotFoundError(f"pip could not fetch mediapipe=={WHEEL_VERSION}: {res.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            return whl.read(WHEEL_MEMBER.format(name=name)), "pip-wheel"
