"""Progress: a bar on a terminal, one plain line per round otherwise.

Both count rounds of the whole run (a resumed run goes on from the checkpointed round to
the new total) and show the seconds per round of summary.json (``round_seconds``).
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool = True, done: int = 0) -> None:
        """``total`` rounds of the whole run, ``done`` of them before this process started (a resume)."""
        self.total, self.desc, self.enabled = total, desc, enabled
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            # no tqdm rate: its smoothed it/s would disagree with the run's own s/round, shown in the postfix
            fmt = "{desc}: {percentage:3.0f}%|{bar}| round {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}"
            self._bar = tqdm(total=total, initial=done, desc=desc, bar_format=fmt, dynamic_ncols=True)

    def update(self, round: int, figures: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(1)
        else:
            print(f"{self.desc} round {round}/{self.total}  {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
