"""``--tensorboard``: each round's scalars as a TensorBoard event file in the run folder.

Written through ``torch.utils.tensorboard`` (the optional extra ``splitfed[tensorboard]``),
from the same row that goes into ``metrics.jsonl``, so both always agree. ``tensorboard
--logdir runs/`` then shows every run side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: metrics.jsonl key -> TensorBoard tag (grouped by what is compared: losses with losses)
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "test_loss": "loss/test",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/validation",
    "test_accuracy": "accuracy/test",
    "test_macro_f1": "macro_f1/test",
    "bytes_sent": "bytes/up",
    "bytes_received": "bytes/down",
    "wall_seconds": "seconds/round",
    "train_seconds": "seconds/training",
    "lr": "learning_rate",
}


class TensorBoardLog:
    """One event file per server process (a resumed run adds a second one that goes on from its round)."""

    def __init__(self, out: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(out))

    def add(self, row: dict[str, Any]) -> None:
        for key, tag in SCALARS.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(tag, value, row["round"])
        self._writer.flush()  # a run stopped at any round still has its scalars

    def close(self) -> None:
        self._writer.close()
