"""splitfed: split-federated deep learning over ZeroMQ.

Layers (see DESIGN.md): ``splitfed.wire`` and ``splitfed.transport`` own bytes,
``splitfed.protocols`` own the maths of a step and a round, ``splitfed.runtime``
owns the loops, processes, progress and outputs.
"""

from typing import Any

from splitfed.errors import SplitFedError

__all__ = ["RunResult", "SplitFedError", "__version__", "run"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``splitfed.run`` and ``splitfed.RunResult``, imported on first use (``import splitfed`` stays fast)."""
    if name in ("run", "RunResult"):
        from splitfed import api

        return getattr(api, name)
    raise AttributeError(f"module 'splitfed' has no attribute {name!r}")
