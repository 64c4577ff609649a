"""Import in the background what a party will need after a wait it cannot avoid.

The first ``torch.optim`` optimizer a process creates imports ``torch._dynamo`` (torch
wraps ``Optimizer.__init__`` and ``step`` with it): seconds of CPU, measured by
``benchmarks/startup.py``. A server waiting for its clients to join, and a client waiting
for its server's welcome, have nothing else to do, so they import it then.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading

log = logging.getLogger(__name__)

#: what the first optimizer of a process imports
MODULES = ("torch._dynamo",)


def _load() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # only a head start: the optimizer imports it again and reports any error
            log.debug("could not import %s ahead of time: %s", name, exc)


def warm_imports() -> threading.Thread | None:
    """Start importing :data:`MODULES` in a thread, unless they are imported already."""
    if all(name in sys.modules for name in MODULES):
        return None
    thread = threading.Thread(target=_load, name="splitfed-warm-imports", daemon=False)  # see the docstring
    thread.start()
    return thread
