"""The zygote's first preload: it ignores SIGTERM, so that a signal meant for a whole run stops each party once.

``timeout(1)`` or ``kill -- -PGID`` sends SIGTERM to every process of the group. Were the
zygote to die of it, each party would get a second SIGTERM through ``PR_SET_PDEATHSIG``
while cleaning up, and the launcher could no longer read the parties' exit statuses (the
zygote reports them). The launcher stops the zygote at exit (:func:`splitfed.runtime.zygote.stop`),
and a forked party restores the default handler (:func:`splitfed.runtime.zygote.enter`).
SIGINT the zygote ignores already (multiprocessing's forkserver does so).

Importing this module anywhere but in the forkserver's preloading does nothing.
"""

from __future__ import annotations

import signal
import sys


def preloaded_by_forkserver() -> bool:
    """Whether this import runs inside multiprocessing's forkserver ``main`` (the zygote preloading)."""
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith("forkserver.py"):
            return True
        frame = frame.f_back
    return False


if preloaded_by_forkserver():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Blocked too: a SIGTERM sent to a party between its fork and its handler is then held, not lost
    # (Linux keeps a blocked signal pending even when ignored), and :func:`enter` unblocks it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    from splitfed.timeline import mark, set_party

    set_party("zygote")  # each forked child names its own party (zygote.enter)
    mark("preloading")
