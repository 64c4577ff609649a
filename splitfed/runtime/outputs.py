"""The run folder (DESIGN.md, "Run output contract"), every file written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from splitfed.files import atomic_write_bytes, atomic_write_json, json_safe


class RunWriter:
    """Writes config.json, metrics.jsonl, summary.json, checkpoint.pt and the plots."""

    def __init__(self, out: Path, tensorboard: bool = False) -> None:
        """With ``tensorboard``, every metrics row also goes to a TensorBoard event file in ``out``."""
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self._tensorboard: Any = None
        if tensorboard:
            from splitfed.runtime.tensorboard import TensorBoardLog

            self._tensorboard = TensorBoardLog(self.out)

    @property
    def summary_path(self) -> Path:
        return self.out / "summary.json"

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.out / "config.json", config)

    def recorded_config(self) -> dict[str, Any]:
        """config.json as written last (with the data the clients reported), or {} if there is none."""
        try:
            return json.loads((self.out / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        # Append-only with one write per line: a crash loses at most the line being written.
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(json_safe(row), sort_keys=True) + "\n")
            fh.flush()
        if self._tensorboard is not None:
            self._tensorboard.add(row)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()

    def keep_metrics_until(self, last_round: int) -> None:
        """On resume: keep the rows up to the checkpointed round, drop any later ones."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        self.rows = [r for r in rows if r["round"] <= last_round]
        text = "".join(json.dumps(json_safe(r), sort_keys=True) + "\n" for r in self.rows)
        atomic_write_bytes(path, text.encode())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def write_checkpoint(self, state: dict[str, Any], name: str = "checkpoint.pt") -> None:
        """``checkpoint.pt`` (the last checkpointed round), or ``best.pt`` (the best validation round)."""
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.out / name, buf.getvalue())

    def write_plots(self, classes: list[str], confusion: np.ndarray | None, config: dict[str, Any]) -> None:
        """curves.png titled with the run (protocol, clients, data, date); confusion.png with protocol and accuracy."""
        from splitfed.plots import plot_confusion, plot_curves, run_title

        if self.rows:
            plot_curves(self.rows, self.out / "curves.png", title=run_title(config))
        if confusion is not None:
            accuracy = np.trace(np.asarray(confusion)) / max(int(np.sum(confusion)), 1)
            title = f"{config.get('protocol')}: test confusion, accuracy {accuracy:.4f}"
            plot_confusion(np.asarray(confusion), classes, self.out / "confusion.png", title=title)
