"""Preprocessing fails fast and clearly: a missing extra, a worker that cannot start, bad settings.

Each failure must be one ``error:`` line and exit status 1, never a traceback and never a
hang: a pool whose workers cannot start used to respawn them for ever. The commands run as
real subprocesses with a timeout, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from splitfed.preprocessing.cli import run_from_args
from splitfed.preprocessing.detector import require_extra
from splitfed.preprocessing.pipeline import Options, run

from splitfed.cli_parser import build_parser
from splitfed.errors import ConfigError, DataError
from splitfed.models.vertical import band_bounds

sys.path.insert(0, str(Path(__file__).parent))
import kdef_tree  # noqa: E402

TIMEOUT = 90  # seconds; a healthy failure takes a few, the old respawn loop never ended
EXTRA = "splitfed[preprocess]"


def _script(name: str) -> str:
    exe = shutil.which(name, path=os.path.dirname(sys.executable))
    assert exe, f"the {name} console script is not installed: run bash scripts/setup.sh"
    return exe


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})})


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed command, after checking it failed cleanly."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two real face photos with KDEF names: enough for a run to start its pool of workers."""
    src = tmp_path_factory.mktemp("photos")
    kdef_tree.build_few(src)
    return src


def _stand_ins(folder: Path, *modules: str) -> Path:
    """Packages that shadow real ones on PYTHONPATH and fail to import, as a missing install does."""
    for name in modules:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f'raise ImportError("No module named {name!r} (test stand-in)")\n')
    return folder


# ------------------------------------------------------------------ a missing optional dependency


@pytest.mark.parametrize("missing", [("cv2", "mediapipe"), ("mediapipe",)])
@pytest.mark.parametrize("command", [["splitfed", "preprocess"], ["eye-crop"]])
def test_missing_extra_is_one_error_line_not_a_hang(
    photos: Path, tmp_path: Path, missing: tuple[str, ...], command: list[str]
) -> None:
    fake = _stand_ins(tmp_path / "fake", *missing)
    dst = tmp_path / "out"
    cmd = [_script(command[0]), *command[1:], "kdef", str(photos), str(dst), "--workers", "2", "--quiet"]
    line = _one_error_line(_run(cmd, env={"PYTHONPATH": str(fake)}))
    assert EXTRA in line and missing[0] in line, line
    assert not dst.exists()  # found in the parent, before anything was written or any worker started


def test_require_extra_passes_where_the_extra_is_installed() -> None:
    require_extra()


# ------------------------------------------------------------------ workers that cannot start


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_that_cannot_start_fails_the_run(photos: Path, tmp_path: Path, workers: str) -> None:
    """A model file the detector cannot load: every worker's initializer fails; the run must say so and stop."""
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(bytes(range(256)) * 20)
    cmd = [_script("eye-crop"), "kdef", str(photos), str(tmp_path / "out"), "--quiet", "--workers", workers]
    line = _one_error_line(_run([*cmd, "--face-model", str(garbage)]))
    assert str(garbage) in line and "--face-model" in line, line


_POOL_CHECK = """
import operator, os
from splitfed.errors import SplitFedError
from splitfed.preprocessing.workers import map_in_workers

print("ok", list(map_in_workers(abs, [-1, -2, -3], 2, None, ())))
for init, args in ((operator.truediv, (1, 0)), (os._exit, (3,))):
    try:
        list(map_in_workers(abs, [-1, -2, -3], 2, init, args))
    except SplitFedError as exc:
        print(type(exc).__name__, exc)
"""


def test_pool_fails_instead_of_respawning_workers() -> None:
    """An initializer that raises, or a worker that dies, ends the map with that error (never a respawn loop)."""
    res = _run([sys.executable, "-c", _POOL_CHECK])
    assert res.returncode == 0, res.stderr
    ok, raised, died = res.stdout.strip().splitlines()
    assert ok == "ok [1, 2, 3]"
    assert raised.startswith("WorkerStartError") and "ZeroDivisionError: division by zero" in raised, raised
    assert died.startswith("PartyFailedError") and "--workers 1" in died, died
    assert "Traceback" not in res.stderr, res.stderr


# ------------------------------------------------------------------ settings and data: SplitFedError, not ValueError


def _args(*argv: str):
    return build_parser().parse_args(["preprocess", *argv])


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--angles", "S,XX"], "unknown angle"),
        (["--angles", ","], "no angle given"),
        (["--size", "64-128"], "HEIGHTxWIDTH"),
        (["--size", "4x4"], "8x8"),
        (["--width", "0"], "--width"),
        (["--up", "nan"], "--up"),
        (["--workers", "-1"], "--workers"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path: Path, flags: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        run_from_args(_args("kdef", str(tmp_path), str(tmp_path / "out"), *flags))


def test_a_missing_source_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        run(tmp_path / "nowhere", tmp_path / "out", Options(progress=False))


def test_a_corrupt_earlier_report_is_a_data_error(photos: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "report.json").write_text("{ half a report")
    with pytest.raises(DataError, match="--force"):
        run(photos, dst, Options(progress=False, workers=1))


@pytest.mark.parametrize("command", [["splitfed", "preprocess"], ["eye-crop"]])
def test_commands_print_one_error_line(tmp_path: Path, command: list[str]) -> None:
    base = [_script(command[0]), *command[1:], "kdef"]
    line = _one_error_line(_run([*base, str(tmp_path / "nowhere"), str(tmp_path / "out")]))
    assert "nowhere" in line and "not a folder" in line
    line = _one_error_line(_run([*base, str(tmp_path), str(tmp_path / "out"), "--angles", "S,XX"]))
    assert "unknown angle" in line and "error: error:" not in line


def test_an_argparse_usage_error_keeps_exit_status_2(tmp_path: Path) -> None:
    res = _run([_script("eye-crop"), "kdef", str(tmp_path)])  # DST missing
    assert res.returncode == 2 and "usage:" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------ vertical bands


def test_too_many_bands_is_a_config_error_that_says_what_to_do() -> None:
    assert band_bounds(8, 2) == [(0, 4), (4, 8)]
    with pytest.raises(ConfigError, match="fewer clients|wider images"):
        band_bounds(8, 9)


def test_a_contact_sheet_tile_names_its_source_photo(tmp_path: Path) -> None:
    """A bad crop on the sheet can be traced to its photo: each tile is labelled with the source file."""
    from PIL import Image
    from splitfed.preprocessing.contact_sheet import contact_sheet, tile_label

    row = {"path": "AF01/AF01ANS.png", "label": "angry", "source": "KDEF/AF01/AF01ANS.JPG", "angle": "S"}
    assert tile_label(row) == ["AF01ANS.JPG", "angry S"]
    (tmp_path / "AF01").mkdir()
    Image.new("L", (64, 32), 128).save(tmp_path / row["path"])
    contact_sheet(tmp_path, [row], tmp_path / "sheet.png")
    assert Image.open(tmp_path / "sheet.png").size[1] > 32 + 26  # the crop and its two label lines
