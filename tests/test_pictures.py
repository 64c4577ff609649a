"""Pictures people can read (issue 13, part 3): titles, whole-number rounds, markers, colour bars, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from splitfed import bench, plots
from splitfed.runtime.outputs import RunWriter

ROWS = [
    {"round": r, "train_loss": 1 / r, "test_loss": 1.1 / r, "train_accuracy": 0.5 + r / 20, "test_accuracy": 0.5}
    for r in (1, 2, 3)
]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The figures the real plotting code draws, by file name, instead of PNG files."""
    drawn: dict[str, Any] = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: drawn.__setitem__(Path(path).name, fig))
    return drawn


def test_run_figures_name_the_run_and_count_whole_rounds(tmp_path: Path, figures: dict[str, Any]) -> None:
    writer = RunWriter(tmp_path)
    writer.rows = ROWS
    confusion = np.array([[3, 1], [0, 4]])
    writer.write_plots(["cat", "dog"], confusion, {"protocol": "sflv2", "clients": 3, "data": "digits"})
    curves = figures["curves.png"]
    title = curves._suptitle.get_text()
    assert title.startswith("sflv2, 3 clients, data digits, 20")  # and the date
    for ax in curves.axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert all(line.get_marker() not in (None, "None", "") for line in ax.get_lines())
    matrix = figures["confusion.png"]
    assert len(matrix.axes) == 2  # the matrix and its colour bar
    assert matrix.axes[0].get_title() == "sflv2: test confusion, accuracy 0.8750"
    assert [t.get_text() for t in matrix.axes[0].get_yticklabels()] == ["cat", "dog"]


def _row(protocol: str, ok: int) -> dict[str, Any]:
    figures = {k: 0.5 for k in ("test_accuracy", "test_macro_f1", "test_loss", "train_accuracy")}
    spread = {f"{k}_std": 0.0 for k in ("test_accuracy", "test_macro_f1", "test_loss")}
    per_round = {"seconds_per_epoch": 1.0, "mb_up_per_epoch": 1.0, "mb_down_per_epoch": 1.0, "peak_memory_mb": 99.0}
    return {"protocol": protocol, "runs_ok": f"{ok}/{ok}", "error": "", **figures, **spread, **per_round}


def test_results_md_records_the_settings_and_shows_a_spread_only_over_several_seeds(tmp_path: Path) -> None:
    settings = bench.bench_settings(["--clients", "3", "--epochs", "2", "--data", "digits", "--model", "cnn"], [0])
    assert settings["clients"] == "3" and settings["model"] == "cnn" and settings["seeds"] == "0"
    bench.write_tables([_row("sflv1", 1)], tmp_path, settings)
    one = (tmp_path / "results.md").read_text()
    assert "±" not in one and "| sflv1 | 0.5000 | 0.5000 | 0.5000 |" in one
    assert one.startswith("Settings: clients 3, epochs 2, data digits, model cnn, seeds 0, date 20")
    assert "splitfed 0." in one.splitlines()[0]
    bench.write_tables([_row("sflv1", 2)], tmp_path, settings)
    assert "0.5000 ± 0.0000" in (tmp_path / "results.md").read_text()


def test_bench_curves_keep_identical_protocols_apart(tmp_path: Path, figures: dict[str, Any]) -> None:
    same = [{"test_accuracy": 0.5, "test_loss": 1.0}] * 3
    runs = {p: [bench.BenchRun(p, 0, tmp_path, {}, rows=same)] for p in ("sflv1", "fedavg")}
    bench.plot_comparison(runs, tmp_path)
    acc = figures["curves.png"].axes[0]
    assert "mean over seeds" not in acc.get_title()  # one seed: nothing was averaged
    first, second = acc.get_lines()
    assert (first.get_marker(), first.get_linestyle()) != (second.get_marker(), second.get_linestyle())
    runs["sflv1"].append(bench.BenchRun("sflv1", 1, tmp_path, {}, rows=same))
    bench.plot_comparison(runs, tmp_path)
    assert "mean over seeds" in figures["curves.png"].axes[0].get_title()
