"""splitfed: split-federated deep learning over ZeroMQ.

Layers (see DESIGN.md): ``splitfed.wire`` and ``splitfed.transport`` own bytes,
``splitfed.protocols`` own the maths of a step and a round, ``splitfed.runtime``
owns the loops, processes, progress and outputs.
"""

import os
from typing import Any

from splitfed.errors import SplitFedError

# OpenMP threads that wait for work sleep instead of spinning. A spinning thread holds a core
# that another process needs: with a second job on the cores, two torch threads ran a step
# loop 18x slower than one (160 s vs 9 s); passive, they ran it in 2-8 s. Read once, when
# torch loads its OpenMP runtime, so it applies where splitfed is imported before torch
# (every splitfed process, the CLI); set OMP_WAIT_POLICY yourself to choose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["RunResult", "SplitFedError", "__version__", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``splitfed.run`` and ``splitfed.RunResult``, imported on first use (``import splitfed`` stays fast)."""
    if name in ("run", "RunResult"):
        from splitfed import api

        return getattr(api, name)
    raise AttributeError(f"module 'splitfed' has no attribute {name!r}")
