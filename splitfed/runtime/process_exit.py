"""Ending a finished splitfed process without the interpreter's module teardown.

Once torch is loaded (and ``torch._dynamo``, which every optimizer imported until
:mod:`splitfed.lazy_dynamo`), an interpreter's own exit spends most of a second destroying modules
and collecting their objects after the program is done (0.9 s measured on this project's 2-core
machine, with both), which every ``splitfed
server``, ``splitfed client`` and ``splitfed evaluate`` command paid at its end. A command whose
work is done ends here as the interpreter would, minus that teardown: it stops and waits for its
non-daemon threads (``threading._shutdown``, the call the interpreter's exit makes; where a Python
lacks it, the usual exit is taken), runs the ``atexit`` handlers (logging's flush and close among them),
flushes standard output and error, and then leaves with ``os._exit``. A party forked from the
zygote ends the same way (:func:`finish`, then the zygote's ``os._exit`` for every child).

Files splitfed writes are closed (or written atomically) before this; an object left open in a
module's globals until the interpreter's teardown would lose what it had buffered, so code
that runs in a splitfed process closes what it opens.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """End this process with exit status ``code``, skipping the module teardown where torch is loaded."""
    if "torch" not in sys.modules or not hasattr(threading, "_shutdown"):  # nothing heavy, or no safe way round it
        sys.exit(code)
    finish()
    os._exit(code)


def finish() -> None:
    """What a normal interpreter exit does before its teardown: threading's exit hooks (a ThreadPoolExecutor's
    idle workers are told to stop there) and a wait for every non-daemon thread (``threading._shutdown``, the
    call the interpreter's exit makes), the ``atexit`` handlers, then a flush of standard output and error."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more can be said there
            pass
