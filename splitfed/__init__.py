"""splitfed: split-federated deep learning over ZeroMQ.

Layers (see DESIGN.md): ``splitfed.wire`` and ``splitfed.transport`` own bytes,
``splitfed.protocols`` own the maths of a step and a round, ``splitfed.runtime``
owns the loops, processes, progress and outputs.
"""

from splitfed.errors import SplitFedError

__all__ = ["SplitFedError", "__version__"]
__version__ = "0.1.0"
