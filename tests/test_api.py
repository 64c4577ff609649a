"""The Python API, `splitfed.run(...)`: the same runs as the command, from a script or a notebook."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import splitfed
from splitfed.api import import_path_of
from splitfed.errors import ConfigError


def test_run_over_processes_returns_the_summary_and_the_metrics(tmp_path: Path) -> None:
    result = splitfed.run("sflv2", clients=2, epochs=2, out=tmp_path / "run", lr=3e-3, order="interleaved")
    assert result.out == tmp_path / "run" and result.summary["status"] == "completed"
    assert [row["round"] for row in result.metrics] == [1, 2]
    assert result.test_accuracy == result.summary["test_accuracy"] > 0.5
    config = (tmp_path / "run" / "config.json").read_text()
    assert '"order": "interleaved"' in config and '"lr": 0.003' in config
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == [
        "client-0.log",
        "client-1.log",
        "server.log",
    ]
    more = splitfed.run("sflv2", resume=tmp_path / "run", epochs=3, in_process=True)
    assert more.summary["rounds_done"] == 3 and more.summary["resumed_after_round"] == 2


def _tiny(shape, n_classes):
    return [nn.Sequential(nn.Flatten(), nn.Linear(shape[0], 16), nn.ReLU()), nn.Linear(16, n_classes)]


def test_in_process_takes_python_objects(tmp_path: Path) -> None:
    """A model factory, rows as tensors and an augmentation, handed over as they are."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()

    def jitter(batch, generator):
        return batch + 0.01 * torch.randn(batch.shape, generator=generator)

    result = splitfed.run(
        "sflv1",
        clients=2,
        epochs=3,
        model=_tiny,
        data=(x, y),
        augment=jitter,
        in_process=True,
        out=tmp_path / "r",
        lr=0.02,
    )
    assert result.summary["status"] == "completed" and result.test_accuracy > 0.8
    assert result.summary["classes"] == ["0", "1"]


def test_unknown_settings_and_out_of_process_objects_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['learning_rate'\].*'lr'"):
        splitfed.run("sflv1", learning_rate=0.1, out=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['order'\]"):
        splitfed.run("sflv1", order="interleaved", out=tmp_path / "b")
    with pytest.raises(ConfigError, match="with processes, pass a name, a folder or an import path"):
        splitfed.run("sflv1", data=(torch.zeros(4, 2), torch.zeros(4)), out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_functions_travel_to_other_processes_by_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert import_path_of("model", _tiny) == f"{__name__}:_tiny"
    notebook = types.ModuleType("__main__")  # an interactive session: no __file__
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    fn = types.FunctionType(_tiny.__code__, {}, "made_here")
    fn.__module__, fn.__qualname__ = "__main__", "made_here"
    with pytest.raises(ConfigError, match="notebook .* move it into a .py module, or pass in_process=True"):
        import_path_of("model", fn)


def test_import_splitfed_and_the_help_never_load_torch() -> None:
    """`splitfed --help` must be instant: it may not import torch (seconds on a small machine)."""
    code = (
        "import sys, contextlib, io\n"
        "import splitfed\n"
        "from splitfed.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['--version'], ['client', '--help'], ['keys', '--help']):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
