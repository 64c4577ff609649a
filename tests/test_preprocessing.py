"""Eye-region preprocessing on real face photos (scikit-image's astronaut, matplotlib's Grace Hopper)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from splitfed.preprocessing import face_model, kdef
from splitfed.preprocessing.geometry import CropSpec, parse_size, project, source_to_crop, tilt_degrees, warp
from splitfed.preprocessing.manifest import read_manifest
from splitfed.preprocessing.pipeline import Options, eye_positions_in_crop, run

from splitfed.data.datasets import load_index
from splitfed.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
import kdef_tree  # noqa: E402

SPEC = CropSpec()


# ------------------------------------------------------------------ names and geometry (pure)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AF01ANS.JPG", ("A", "F", "01", "angry", "S", "F01")),
        ("bm35suhl.jpg", ("B", "M", "35", "surprised", "HL", "M35")),
        ("AM10DIFR.JPG", ("A", "M", "10", "disgusted", "FR", "M10")),
    ],
)
def test_kdef_names_parse(name: str, expected: tuple) -> None:
    n = kdef.parse_name(name)
    assert (n.session, n.gender, n.person, n.label, n.angle, n.subject) == expected


@pytest.mark.parametrize("name", ["AF1ANS.JPG", "AF01XXS.JPG", "CF01ANS.JPG", "AF01ANSX.JPG", "AF01AN.JPG"])
def test_bad_kdef_names_are_refused(name: str) -> None:
    assert kdef.parse_name(name) is None


def test_same_person_in_both_sessions() -> None:
    assert kdef.parse_name("AF01ANS.JPG").subject == kdef.parse_name("BF01HAS.JPG").subject


@pytest.mark.parametrize("tilt", [-15.0, 0.0, 7.5, 20.0])
def test_warp_levels_the_eyes_and_puts_them_where_expected(tilt: float) -> None:
    """Draw two dots as eyes on a tilted line; they must land level, at the spec's positions."""
    img = np.zeros((400, 400, 3), np.uint8)
    c, iod = np.array([200.0, 210.0]), 80.0
    d = np.array([math.cos(math.radians(tilt)), math.sin(math.radians(tilt))]) * iod / 2
    eyes = (tuple(c - d), tuple(c + d))
    yy, xx = np.mgrid[:400, :400]
    for ex, ey in eyes:
        img[(xx - ex) ** 2 + (yy - ey) ** 2 <= 16] = 255
    crop = warp(img, eyes[0], eyes[1], SPEC)[..., 0].astype(float)
    found = []
    for half in (crop[:, : SPEC.out_w // 2], crop[:, SPEC.out_w // 2 :]):
        ys, xs = np.nonzero(half > 60)
        w = half[ys, xs]
        found.append((float((xs * w).sum() / w.sum()), float((ys * w).sum() / w.sum())))
    found[1] = (found[1][0] + SPEC.out_w // 2, found[1][1])
    for (fx, fy), (ex, ey) in zip(found, SPEC.eye_positions(), strict=True):
        assert abs(fx - ex) < 1.0 and abs(fy - ey) < 1.0, (tilt, found, SPEC.eye_positions())
    m = source_to_crop(eyes[0], eyes[1], SPEC)
    for eye, expected in zip(eyes, SPEC.eye_positions(), strict=True):
        assert np.allclose(project(m, eye), expected, atol=1e-6)


def test_size_parsing() -> None:
    assert parse_size("64x128") == (64, 128)
    with pytest.raises(ConfigError, match="HEIGHTxWIDTH"):
        parse_size("64-128")


# ------------------------------------------------------------------ the model file


def test_model_routes_are_checksummed(tmp_path: Path, monkeypatch) -> None:
    real = face_model.resolve(face_model.SHORT)  # cache, or the pip wheel on a fresh machine
    assert real.sha256 == face_model.KNOWN_SHA256[face_model.SHORT] and real.route in ("cache", "pip-wheel")
    assert face_model.resolve(face_model.SHORT, real.path).route == "explicit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(face_model, "_from_wheel", lambda name: (b"not a model", "pip-wheel"))
    with pytest.raises(face_model.ModelNotFoundError, match="refused"):
        face_model.resolve(face_model.SHORT, allow_download=False)
    bad = tmp_path / "splitfed" / "models" / face_model.SHORT
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"tampered")
    monkeypatch.setattr(face_model, "_from_wheel", lambda name: (real.path.read_bytes(), "pip-wheel"))
    again = face_model.resolve(face_model.SHORT, allow_download=False)
    assert again.route == "pip-wheel" and face_model.sha256(bad) == real.sha256  # the tampered copy was replaced


# ------------------------------------------------------------------ the whole command on a KDEF-style tree


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("kdef")
    facts = kdef_tree.build(root / "src")
    dst = root / "out"
    run(root / "src", dst, Options(workers=2, progress=False))
    return root / "src", dst, facts


def rows_by_stem(dst: Path) -> dict[str, dict]:
    return {Path(r["source"]).stem: r for r in read_manifest(dst)}


def test_bad_files_are_reported_and_the_rest_processed(processed) -> None:
    _, dst, facts = processed
    report = json.loads((dst / "report.json").read_text())
    reasons = {Path(f["file"]).stem: f["reason"] for f in report["failures"]}
    assert reasons.keys() == {facts["corrupt"], facts["black"], facts["misnamed"]}
    assert "unreadable" in reasons[facts["corrupt"]]
    assert "blank" in reasons[facts["black"]]
    assert "KDEF pattern" in reasons[facts["misnamed"]]
    rows = rows_by_stem(dst)
    for stem in facts["good"]:
        assert rows[stem]["method"].startswith("mediapipe"), (stem, rows[stem]["method"])
    assert rows[facts["odd_size"]]["method"].startswith("mediapipe")
    assert any(facts["odd_size"] in s for s in report["odd_size"])
    assert rows[facts["no_face"]]["method"] == "kdef-fixed"  # KDEF-only fallback
    assert facts["profile"] not in rows and report["excluded"] == 1  # FL not in the default angles
    assert not any("AKDEF" in r["source"].split("/")[1] for r in rows.values())
    assert report["model_route"] in ("cache", "pip-wheel") and report["images_per_second"] > 0
    assert (dst / "contact_sheet.png").stat().st_size > 5000


def test_crops_hold_both_eyes_where_expected(processed) -> None:
    _, dst, facts = processed
    rows = rows_by_stem(dst)
    for stem in facts["good"]:
        for got, expected in zip(eye_positions_in_crop(rows[stem], SPEC), SPEC.eye_positions(), strict=True):
            assert np.allclose(got, expected, atol=0.5), stem
        with Image.open(dst / rows[stem]["path"]) as im:
            assert im.size == (128, 64) and im.mode == "L"


def _tilt(row: dict) -> float:
    ax, ay, bx, by = (float(v) for v in row["eyes"].split(","))
    return tilt_degrees((ax, ay), (bx, by))


def _iod(row: dict) -> float:
    ax, ay, bx, by = (float(v) for v in row["eyes"].split(","))
    return math.hypot(bx - ax, by - ay)


def test_rotated_and_mirrored_inputs_give_levelled_crops(processed) -> None:
    """The detector sees the known +-10 degree rotations, and the crop undoes them.

    BlazeFace's eye keypoints are good to a few degrees on these photos (eyes 40-85 px
    apart), so the tolerance is 5 degrees; a pipeline that did not level would be off by 10.
    Mirrored and scaled copies must find the same eye distance (scaled by 0.8).
    """
    _, dst, _ = processed
    rows = rows_by_stem(dst)
    cases = (
        ("AF01ANS", {"AF01SUHL": -10, "AF01NEHR": 10}, "BF01HAS", "BF01DIS"),
        ("AF02AFS", {"AF02HAHL": -10, "BF02ANHR": 10}, "BF02SAS", "AF02SUS"),
    )
    for upright, rotated, mirrored, scaled in cases:
        base = _tilt(rows[upright])
        for stem, degrees in rotated.items():  # PIL rotates counter-clockwise: image tilt changes by -angle
            assert abs(_tilt(rows[stem]) - base - degrees) < 5, (stem, _tilt(rows[stem]), base)
            (ax, ay), (bx, by) = eye_positions_in_crop(rows[stem], SPEC)
            assert abs(math.degrees(math.atan2(by - ay, bx - ax))) < 1e-6  # level in the crop
        assert abs(_iod(rows[mirrored]) / _iod(rows[upright]) - 1) < 0.06, mirrored
        assert abs(_iod(rows[scaled]) / _iod(rows[upright]) - 0.8) < 0.06, scaled


def test_second_run_is_a_no_op_and_the_manifest_round_trips(processed) -> None:
    src, dst, facts = processed
    before = (dst / "manifest.csv").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.png") if p.name != "contact_sheet.png"}
    run(src, dst, Options(workers=2, progress=False))
    report = json.loads((dst / "report.json").read_text())
    assert report["processed"] == 0 and report["kept_from_before"] == len(mtimes)
    assert len(report["failures"]) == 3
    assert (dst / "manifest.csv").read_bytes() == before
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    index = load_index(str(dst))  # what `splitfed run --data` reads
    assert index.shape == (1, 64, 128)
    assert set(index.subjects) == {"F01", "F02", "M03"}
    assert set(index.classes) <= set(kdef.EXPRESSIONS.values()) and len(index) == len(mtimes)


def test_no_fallback_makes_a_miss_a_failure(tmp_path: Path) -> None:
    src = tmp_path / "src"
    kdef_tree.build(src)
    run(src, tmp_path / "out", Options(workers=1, progress=False, fallback=False))
    reasons = {
        Path(f["file"]).stem: f["reason"]
        for f in json.loads((tmp_path / "out" / "report.json").read_text())["failures"]
    }
    assert reasons["AM03NES"] == "no face found"


def test_folder_mode_and_training_on_the_result(splitfed_cmd, run_protocol, tmp_path: Path) -> None:
    faces = kdef_tree.real_faces()
    for label, photo in (("calm", "astronaut"), ("stern", "hopper")):
        folder = tmp_path / "photos" / label
        folder.mkdir(parents=True)
        for name, img in kdef_tree.variants(faces[photo]).items():
            img.save(folder / f"{name}.png")
    res = subprocess.run(
        [
            *splitfed_cmd,
            "preprocess",
            "folder",
            str(tmp_path / "photos"),
            str(tmp_path / "crops"),
            "--quiet",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(tmp_path / "crops" / "manifest.csv")
    rows = read_manifest(tmp_path / "crops")
    assert sorted({r["label"] for r in rows}) == ["calm", "stern"] and len(rows) == 10
    _, out = run_protocol(
        "sflv1", "--clients", "2", "--epochs", "1", "--batch-size", "4", "--data", str(tmp_path / "crops")
    )
    config = json.loads((out / "config.json").read_text())
    assert config["input_shape"] == [1, 64, 128]
    assert config["model"] == "auto" and config["architecture"] == "mobilenet"  # eye crops get the larger model
