"""A zygote: one process that imports torch and splitfed once, and forks every party of a local run.

``splitfed run`` used to start each party with ``python -m splitfed ...``, so every process
imported torch on its own (seconds each, all at once on a small machine) and held its own
copy of the interpreter's and torch's private memory. Here the launcher, which imports no
torch, starts one preloading process (:mod:`splitfed.runtime.zygote_main`) and asks it to fork
each party. A forked party shares the pages it did not write since the fork, so the summed
PSS of a run counts torch once, and torch is imported once per launcher, not once per party
(``splitfed bench`` reuses the same zygote for every run).

The zygote imports :data:`PRELOAD` (torch, splitfed and every registered protocol), then forks.
It used to import ``torch._dynamo`` too, in a second stage, and fork ``splitfed run``'s checks
beside it; since :mod:`splitfed.lazy_dynamo` no optimizer imports it, and neither does the zygote.

What the zygote must not do before it forks: initialise CUDA (``--device cuda`` works only
in a process that did not inherit a CUDA context) or start OpenMP's thread pool (a forked
child could not then size its own with ``torch.set_num_threads``). It only imports modules;
anything that touches a device, such as ``splitfed run``'s checks, runs in a forked child.

A forked party runs the same ``splitfed.cli.main`` a ``splitfed server`` or ``splitfed client``
command runs, with its own environment, working folder, log file and exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from splitfed.errors import SplitFedError

#: what the zygote imports before it forks anything (with every registered protocol's declaration and roles)
PRELOAD = [
    "torch",
    "torch.fx.experimental.symbolic_shapes",  # (sympy) what a party's first model build and backward(grad) import
    "numpy",
    "zmq",
    "splitfed.cli",
    "splitfed.api",
    "splitfed.checks",
    "splitfed.runtime.server",
    "splitfed.runtime.client",
    "splitfed.data.shards",
    "splitfed.preprocessing.cli",  # every `splitfed server` parser adds the preprocess flags
    "splitfed.cli_run",  # the checks' target
    "splitfed.runtime.zygote",  # the parties' target, and what each child runs first (enter: ctypes)
    "ctypes",
]
#: set to 1 to start every party as its own ``python -m splitfed`` process, as before the zygote
NO_ZYGOTE = "SPLITFED_NO_ZYGOTE"
#: seconds the zygote gets, at exit, to end on its own once its children are gone, before it is killed
STOP_WAIT = 3.0
#: the exit status reported for a child whose zygote died before reporting it (as multiprocessing did)
LOST = 255
#: how long one thread may hold the connection while it waits for the zygote's answer
SLICE = 0.05

#: the zygote's command: the launcher's own ``sys.path`` first (not ``-c``'s current folder, where another
#: checkout of splitfed may lie), then :func:`splitfed.runtime.zygote_main.main`
_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[2])[1]; import splitfed.runtime.zygote_main as z; z.main()"


class _Connection:
    """The command's side of one running zygote: the process, the socket, and what the zygote reported."""

    @classmethod
    def start(cls) -> _Connection:
        """Start a zygote, preloading, and connect to it."""
        ours, theirs = socket.socketpair()
        preload = json.dumps([PRELOAD, sys.path])
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(theirs.fileno()), preload],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        return cls(ours, process)

    def __init__(self, sock: socket.socket, process: subprocess.Popen | None) -> None:
        self.sock, self.process = sock, process
        self.lock = threading.Lock()  # one reader at a time
        self.buffer = b""
        self.next_id = self.requested = 0
        self.pids: dict[int, int] = {}  # request id -> child pid
        self.codes: dict[int, int] = {}  # child pid -> exit status
        self.peaks: dict[int, int] = {}  # child pid -> its peak resident memory, KiB (reported with its exit)
        self.cancelled: dict[int, int] = {}  # request id -> the status of a child signalled before its fork
        self.lost = False  # the zygote's end closed: it died, or was stopped

    def request(self, target: Callable[..., Any], args: tuple) -> int:
        """Ask the zygote to fork ``target(*args)``; the request's id (:meth:`pid` waits for the child's pid)."""
        payload = pickle.dumps((target, args))
        with self.lock:
            if self.lost:
                raise EOFError("the zygote has ended")
            self.next_id += 1
            self.requested = ident = self.next_id
            header = {"id": ident, "size": len(payload), "path": sys.path}
            try:
                self._send(json.dumps(header).encode() + b"\n" + payload)
            except OSError as exc:
                raise EOFError(f"the zygote's socket: {exc}") from exc
        return ident

    def _send(self, data: bytes) -> None:
        """Send one whole message (the lock held). One cut short (an OSError, or Ctrl-C while the socket is full
        and the zygote busy importing) would leave the zygote reading the next message as the rest of this one:
        the connection is then closed, which the zygote takes as the command's going (it forks nothing more)."""
        try:
            self.sock.sendall(data)
        except BaseException:
            self.lost = True
            self.sock.close()
            raise

    def pid(self, ident: int) -> int | None:
        """The pid of request ``ident``'s child, once forked; None if cancelled before. Raises EOFError if the
        zygote ended before it forked."""
        while ident not in self.pids:
            if ident in self.cancelled:
                return None
            if self.lost:
                raise EOFError("the zygote ended before it forked")
            self.pump(None)
        return self.pids[ident]

    def cancel(self, ident: int, sig: int) -> None:
        """Send ``sig`` to request ``ident``'s child through the zygote: if not forked yet, it never will be."""
        with self.lock:
            if self.lost:
                return
            try:
                self._send(json.dumps({"cancel": ident, "signal": int(sig), "size": 0}).encode() + b"\n")
            except OSError:
                pass

    def pump(self, timeout: float | None) -> None:
        """Read what the zygote reported, waiting up to ``timeout`` seconds (None: a while) for something."""
        with self.lock:
            if self.lost:
                return
            wait = SLICE if timeout is None else min(timeout, SLICE)
            if not select.select([self.sock], [], [], max(wait, 0))[0]:
                return
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.lost = True
                return
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "exit" in message:
                    self.codes[message["exit"]] = message["code"]
                    self.peaks[message["exit"]] = message.get("maxrss", 0)
                elif "cancelled" in message:
                    self.cancelled[message["id"]] = message["cancelled"]
                else:  # a new child: its pid may be an earlier child's (reaped, and reported above) again
                    self.pids[message["id"]] = pid = message["pid"]
                    self.codes.pop(pid, None)
                    self.peaks.pop(pid, None)

    def idle(self) -> bool:
        """Whether none of the zygote's children can still run: each request cancelled, or forked and its exit
        reported (what the zygote has sent so far is read first)."""
        while not self.lost and select.select([self.sock], [], [], 0)[0]:
            self.pump(0)
        return all(Forked(self, ident).returncode is not None for ident in range(1, self.requested + 1))

    def exit_code(self, pid: int) -> int | None:
        code = self.codes.get(pid)
        return LOST if code is None and self.lost else code


_zygote: _Connection | None = None
_start_lock = threading.Lock()


def start() -> None:
    """Start the zygote now, without forking anything: it preloads while the caller does other work."""
    _running()


def _running() -> _Connection:
    global _zygote
    with _start_lock:
        if _zygote is None:
            _zygote = _Connection.start()
            atexit.register(stop)
        return _zygote


def stop(wait: float = STOP_WAIT) -> None:
    """End the zygote and wait for it (at exit), so that no process outlives the command unseen.

    Its CPU time then counts among the command's children, as the parties' did before. Closing
    our end of its socket ends it once every child it forked has exited; a child still running
    after ``wait`` seconds would hold the command up, so the zygote is then killed (it ignores
    SIGTERM), and its children get SIGTERM through ``PR_SET_PDEATHSIG``. A zygote none of whose
    children runs any more is killed at once: it only imports, so it has nothing to finish."""
    global _zygote
    with _start_lock:
        zygote, _zygote = _zygote, None
    if zygote is None:
        return
    idle = zygote.idle()
    with zygote.lock:
        zygote.lost = True
        zygote.sock.close()
    if idle:  # no child of it runs (a usage error, say, or every party reported its exit): it has nothing to do
        wait = 0  # so it is not left to finish an import it no longer needs
    try:
        zygote.process.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        zygote.process.kill()
        zygote.process.wait()


def zygote_pid() -> int | None:
    """The zygote's process id, once it runs (for tests and benchmarks)."""
    return None if _zygote is None else _zygote.process.pid


class Forked:
    """A forked process with the parts of :class:`subprocess.Popen`'s interface the launcher uses.

    It exists as soon as it is asked for: the zygote forks it once it has imported what it needs
    (:attr:`pid` waits for that); until then the caller goes on, starting the next party, say."""

    def __init__(self, zygote: _Connection, ident: int) -> None:
        self.zygote = zygote
        self.ident = ident

    @property
    def pid(self) -> int | None:
        """The child's pid: waits for the zygote to fork it (None: signalled before, so never forked).
        Raises SplitFedError if the zygote died first."""
        try:
            return self.zygote.pid(self.ident)
        except EOFError as exc:
            raise _zygote_died(self.zygote, exc) from exc

    @property
    def forked(self) -> bool:
        """Whether the zygote has forked it yet (as far as it has told)."""
        self.zygote.pump(0)
        return self.ident in self.zygote.pids

    @property
    def returncode(self) -> int | None:
        pid = self.zygote.pids.get(self.ident)
        if pid is None:
            if self.ident in self.zygote.cancelled:
                return self.zygote.cancelled[self.ident]
            return LOST if self.zygote.lost else None
        return self.zygote.exit_code(pid)

    @property
    def peak_kb(self) -> int:
        """The child's peak resident memory in KiB, once it has exited (0 if never forked or unknown)."""
        pid = self.zygote.pids.get(self.ident)
        return 0 if pid is None else self.zygote.peaks.get(pid, 0)

    def poll(self) -> int | None:
        if self.returncode is None:
            self.zygote.pump(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, waiting up to ``timeout`` seconds. Raises SplitFedError if the zygote died unforked."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(f"request {self.ident}", timeout or 0)
            self.zygote.pump(left)
        if self.ident not in self.zygote.pids and self.ident not in self.zygote.cancelled:
            self.pid  # noqa: B018 - raises the zygote's death
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the child; one not forked yet is never forked (an interrupted start).

        Through the zygote, its parent, which signals a child only while it has not reaped it: the
        command itself could signal a pid that the child had left and another process taken since."""
        if self.poll() is None:
            self.zygote.cancel(self.ident, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork(target: Callable[..., Any], *args: Any, name: str = "splitfed") -> Forked:
    """Ask the zygote to fork ``target(*args)`` (starting the zygote first if need be); returns at once.

    ``target`` and ``args`` are pickled: ``target`` must be importable by module and name in the
    child (not defined in a script's ``__main__``). ``name`` is only for the caller's messages; the
    child names itself (:func:`enter`)."""
    zygote = _running()
    try:
        return Forked(zygote, zygote.request(target, args))
    except (EOFError, OSError) as exc:  # the zygote died: while preloading, or since (out of memory, killed)
        raise _zygote_died(zygote, exc) from exc


def _zygote_died(zygote: _Connection, exc: BaseException) -> SplitFedError:
    """The error for a fork that found no zygote: how it ended, and how to do without one."""
    how = "died"
    with contextlib.suppress(subprocess.TimeoutExpired):
        code = zygote.process.wait(timeout=1.0)
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
    if zygote is _zygote:
        stop(wait=0)  # forget it: a later fork starts a new one
    return SplitFedError(
        f"the zygote (the process that imports torch and forks every party) {how} ({type(exc).__name__}: {exc}); "
        "a protocol plugin that fails at import prints its traceback above. "
        f"To start each party as its own process instead, set {NO_ZYGOTE}=1"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def enter(argv: list[str], env: dict[str, str], cwd: str, stdout: str | None, stderr: str | None) -> None:
    """Make this forked child look like a fresh ``splitfed ARGV`` process: its environment, folder and output.

    ``stdout``/``stderr``: a file to append to, ``os.devnull``, or None to keep the launcher's.
    """
    from splitfed.timeline import mark, party_from_argv, set_party

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the zygote ignores and blocks it; a party stops on it
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt, as in a fresh interpreter
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["splitfed", *argv]
    for fd, path in ((1, stdout), (2, stderr)):
        if path is not None:
            target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(target, fd)
            os.close(target)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(write_through=True)  # as PYTHONUNBUFFERED: a log is complete when the party dies
    set_party("check" if argv[:1] != ["server"] and argv[:1] != ["client"] else party_from_argv(argv))
    _bind_to_zygote(f"sf-{party_from_argv(argv)}")
    mark("forked", extra={"ppid": os.getppid(), "preloaded": "torch" in sys.modules})
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})  # one sent since the fork acts now


def _bind_to_zygote(title: str) -> None:
    """Linux: name this process (``ps``, ``top``) and have it stopped (SIGTERM) should the zygote die.

    The zygote outlives its children unless killed; then its children, orphaned and no longer
    reported to the launcher, stop cleanly instead of running on unseen."""
    libc = _libc()
    if libc is not None:
        import ctypes

        libc.prctl(15, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)  # PR_SET_NAME
        bind_to_zygote(signal.SIGTERM)


def bind_to_zygote(sig: int) -> None:
    """Linux: have this forked child get ``sig`` should the zygote die (``PR_SET_PDEATHSIG``), at once if
    it has died already (the prctl then comes too late to fire)."""
    libc = _libc()
    if libc is None:
        return
    libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    from splitfed.runtime import zygote_main

    if zygote_main.ZYGOTE_PID is not None and os.getppid() != zygote_main.ZYGOTE_PID:
        # the zygote died before the prctl: stop as it would have made us (a SIGTERM is held until the
        # party's handler is in place, as SIGTERM is blocked until then)
        os.kill(os.getpid(), sig)


@functools.cache
def _libc() -> Any:
    """This process's C library, for ``prctl`` (None where it has none); ctypes only once a child needs it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return None
    return libc if hasattr(libc, "prctl") else None


def run_party(argv: list[str], env: dict[str, str], cwd: str, stdout: str | None, stderr: str | None) -> None:
    """The body of a forked party: ``splitfed.cli.main(argv)``, then its exit status (the zygote reports it
    with the party's peak memory)."""
    enter(argv, env, cwd, stdout, stderr)
    from splitfed.cli import main
    from splitfed.runtime.process_exit import finish

    try:
        code = main(argv)
    finally:
        finish()  # what a normal interpreter exit does before its teardown; a zygote's child ends with os._exit
    sys.exit(code)


def use_zygote() -> bool:
    """Whether local runs fork their parties from the zygote (POSIX with fork; ``SPLITFED_NO_ZYGOTE`` unset)."""
    return os.environ.get(NO_ZYGOTE, "") in ("", "0") and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")
