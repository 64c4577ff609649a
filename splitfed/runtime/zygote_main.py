"""The zygote process itself: it imports torch and splitfed, then forks each request it is sent.

Started by :func:`splitfed.runtime.zygote.start` as ``python -c ... FD PRELOAD`` with one end of a
socket pair as FD. Requests come in on it (a JSON header line, then the pickled target and
arguments, which only the forked child unpickles); the zygote answers each with the child's
pid, and later with its exit status. It imports :data:`~splitfed.runtime.zygote.PRELOAD` and
every registered protocol's roles before it forks anything. (It used to import in two stages
and fork ``splitfed run``'s checks between them, beside its import of ``torch._dynamo``, which
no process imports any more: :mod:`splitfed.lazy_dynamo`.)

What the zygote guarantees: it ignores SIGINT and SIGTERM (a group's SIGTERM stops each party
once; it blocks both too, so that one sent to a child before the child's handler is in place
is held, and :func:`splitfed.runtime.zygote.enter` unblocks them); it only imports, on one thread,
so no CUDA context and no OpenMP pool exist before a fork; it reports every child's exit status;
and once the command has closed its end, it exits as soon as its last child has.
"""

from __future__ import annotations

import json
import os
import pickle
import selectors
import signal
import socket
import sys
import traceback
from typing import NoReturn

#: the zygote's own pid, set in the zygote (a child inherits it: its parent should it be orphaned before binding)
ZYGOTE_PID: int | None = None


class Zygote:
    """The zygote's state: its connection to the command, the requests not served yet, its children."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        self.pending: list[tuple[dict, bytes]] = []
        self.children: set[int] = set()
        self.forked: dict[int, int] = {}  # request id -> pid, of the children still running
        self.closed = False  # the command closed its end: no more requests
        self.sig_r, self.sig_w = os.pipe()
        for fd in (self.sig_r, self.sig_w):
            os.set_blocking(fd, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop, through the wakeup fd
        signal.set_wakeup_fd(self.sig_w)
        self.selector = selectors.DefaultSelector()
        self.selector.register(conn, selectors.EVENT_READ)
        self.selector.register(self.sig_r, selectors.EVENT_READ)

    def serve(self) -> None:
        """Read requests and fork them, reap children, until the command has gone and its last child too."""
        timeout: float | None = 0  # what has come in first (a cancel, say), then fork
        while True:
            events = self.selector.select(timeout=timeout)
            for key, _ in events:
                if key.fileobj is self.conn:
                    self._read()
                else:
                    os.read(self.sig_r, 65536)
                    self._reap()
            ready, self.pending = self.pending, []
            for header, payload in ready:
                self._fork(header, payload)
            if events:
                timeout = 0
            elif self.closed and not self.children:
                return
            else:
                timeout = None

    def _read(self) -> None:
        """Everything the command has sent so far, to the end: a cancel or the command's going (EOF) queued
        behind a request is seen before anything is forked."""
        ended = False
        while True:
            try:
                chunk = self.conn.recv(1 << 20, socket.MSG_DONTWAIT)  # the socket itself stays blocking, to send
            except BlockingIOError:  # all read
                break
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
                break
            self.buffer += chunk
        self._parse()  # cancels act now (a forked child is signalled); requests wait in pending
        if ended:
            self.closed = True
            self.pending.clear()  # the command has gone: nothing more is forked for it
            self.selector.unregister(self.conn)

    def _parse(self) -> None:
        """The whole messages in the buffer: a JSON header line, then ``size`` bytes of payload."""
        while b"\n" in self.buffer:
            line, rest = self.buffer.split(b"\n", 1)
            header = json.loads(line)
            if len(rest) < header["size"]:
                return
            if "cancel" in header:
                self._cancel(header["cancel"], header["signal"])
            else:
                self.pending.append((header, rest[: header["size"]]))
            self.buffer = rest[header["size"] :]

    def _cancel(self, ident: int, sig: int) -> None:
        """A signal for request ``ident``'s child: not forked yet, it never will be; forked, it gets ``sig``."""
        waiting = [r for r in self.pending if r[0]["id"] == ident]
        if waiting:
            self.pending.remove(waiting[0])
            self._send({"id": ident, "cancelled": -sig})
        elif ident in self.forked:
            try:
                os.kill(self.forked[ident], sig)
            except ProcessLookupError:  # exited since; its status is on its way
                pass

    def _send(self, message: dict) -> None:
        if self.closed:
            return
        try:
            self.conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError:  # the command went away; its children still end in their own time
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.forked = {ident: child for ident, child in self.forked.items() if child != pid}
            # with the child's peak resident memory (KiB), which the launcher records in summary.json
            self._send({"exit": pid, "code": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss})

    def _fork(self, header: dict, payload: bytes) -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(self._child(header, payload))
        self.children.add(pid)
        self.forked[header["id"]] = pid
        self._send({"id": header["id"], "pid": pid})

    def _child(self, header: dict, payload: bytes) -> int:
        """In the forked child: become the request's target; its exit status."""
        code = 1
        try:
            self.selector.close()
            self.conn.close()
            signal.set_wakeup_fd(-1)
            os.close(self.sig_r)
            os.close(self.sig_w)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sys.path[:] = header.get("path", sys.path)  # where the command finds its modules (a test's, a user's)
            target, args = pickle.loads(payload)  # from the command that started this zygote, never from a peer
            target(*args)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
        return code


def _exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives, as an interpreter would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _preload(modules: list[str]) -> None:
    """Import ``modules``; one that is missing is skipped (its user reports it), any other error ends the zygote."""
    for name in modules:
        try:
            __import__(name)
        except ImportError:
            pass


def main() -> None:
    """``python -c ... FD PRELOAD_JSON``: preload, then serve requests until the command ends."""
    global ZYGOTE_PID
    ZYGOTE_PID = os.getpid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches every party; the zygote stays for their statuses
    # Blocked as well as ignored: a child inherits the mask, so either signal sent to it before its own handler
    # is in place is held until zygote.enter unblocks it, instead of being ignored (pending ones are not inherited).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    from splitfed.timeline import mark, set_party

    set_party("zygote")  # each forked child names its own party (zygote.enter)
    mark("preloading")
    zygote = Zygote(socket.socket(fileno=int(sys.argv[1])))
    modules, _ = json.loads(sys.argv[2])  # the second, the launcher's sys.path, is set already (zygote._BOOT)
    from splitfed.runtime import zygote_warm

    _preload(modules)
    zygote_warm.warm()  # every registered protocol, through the registry (a plugin that raises ends the zygote)
    mark("preloaded")
    zygote.serve()
    _leave()


def _leave() -> NoReturn:
    """End the zygote without the interpreter's teardown of torch's modules (most of a second, which the
    command waits for): it writes nothing, and each of its children has ended with its own ``os._exit``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
