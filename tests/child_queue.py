"""A channel from a child forked by the zygote back to the test that asked for it.

A datagram socket in a private folder: the object pickles as that socket's path, so it can be
passed to ``zygote.fork``; only the process that made it can :meth:`ChildQueue.get`. A datagram
queue holds few messages (``net.unix.max_dgram_qlen``, 10 here) before a sender blocks, so a
test reads what it expects as it goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import tempfile
from typing import Any


class ChildQueue:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="splitfed-queue-")
        self.path = os.path.join(self.folder, "queue")
        self.sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "path": self.path, "sock": None}

    def put(self, value: Any) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(json.dumps(value).encode(), self.path)

    def empty(self) -> bool:
        return not select.select([self._own()], [], [], 0)[0]

    def get(self, timeout: float = 60.0) -> Any:
        """The next value; TimeoutError after ``timeout`` seconds (a child that failed before its put)."""
        if not select.select([self._own()], [], [], timeout)[0]:
            raise TimeoutError(f"nothing came through the queue in {timeout:g} s")
        value = json.loads(self._own().recv(1 << 16))
        return tuple(value) if isinstance(value, list) else value

    def _own(self) -> socket.socket:
        if self.sock is None:
            raise RuntimeError("only the process that made a ChildQueue can read it")
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                os.rmdir(self.folder)
