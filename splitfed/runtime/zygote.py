"""A zygote: one process that imports torch and splitfed once, and forks every party of a local run.

``splitfed run`` used to start each party with ``python -m splitfed ...``, so every process
imported torch on its own (seconds each, all at once on a small machine) and held its own
copy of the interpreter's and torch's private memory. Here the launcher, which imports no
torch, starts one preloading process (multiprocessing's "forkserver") and asks it to fork
each party. A forked party shares the pages it did not write since the fork, so the summed
PSS of a run counts torch once, and torch is imported once per launcher, not once per party
(``splitfed bench`` reuses the same zygote for every run).

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
import importlib.machinery
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

from splitfed.errors import SplitFedError

#: what the zygote imports before it forks anything (protocol modules are added from the registry)
PRELOAD = [
    "splitfed.runtime.zygote_signals",  # first: the zygote ignores SIGTERM (a group's SIGTERM stops each party once)
    "torch",
    "torch._dynamo",  # imported by every optimizer's constructor: seconds, once per party without the zygote
    "numpy",
    "zmq",
    "splitfed.cli",
    "splitfed.api",
    "splitfed.checks",
    "splitfed.runtime.server",
    "splitfed.runtime.client",
    "splitfed.data.shards",
    "splitfed.preprocessing.cli",  # every `splitfed server` parser adds the preprocess flags
]
#: the last preload: every protocol's roles (the entry points name light declarations), the registry read once
WARM = "splitfed.runtime.zygote_warm"
#: set to 1 to start every party as its own ``python -m splitfed`` process, as before the zygote
NO_ZYGOTE = "SPLITFED_NO_ZYGOTE"
#: seconds the zygote gets, at exit, to end on its own once its children are gone, before it is killed
STOP_WAIT = 3.0

_context: Any = None
_main_lock = threading.Lock()


def preload_modules() -> list[str]:
    """PRELOAD, every registered protocol's module named by the entry points (nothing imported here), then WARM."""
    protocols = sorted({ep.value.split(":")[0] for ep in entry_points(group="splitfed.protocols")})
    return PRELOAD + [m for m in protocols if m not in PRELOAD] + [WARM]


def context() -> Any:
    """The forkserver context; its server (the zygote) starts, preloading, at the first fork."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(preload_modules())
        atexit.register(stop)
    return _context


def start() -> None:
    """Start the zygote now, without forking anything: it preloads while the caller does other work."""
    from multiprocessing import forkserver

    context()
    forkserver.ensure_running()


def stop(wait: float = STOP_WAIT) -> None:
    """End the zygote and wait for it (at exit), so that no process outlives the command unseen.

    Its CPU time then counts among the command's children, as the parties' did before. Closing
    its "alive" pipe ends it once every child it forked has exited (each holds that pipe too);
    a child still running after ``wait`` seconds would hold the command up, so the zygote is then
    killed (it ignores SIGTERM), and its children get SIGTERM through ``PR_SET_PDEATHSIG``."""
    from multiprocessing import forkserver, util

    server = forkserver._forkserver
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = server._forkserver_pid = None
        if not _reaped(pid, wait):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            _reaped(pid, None)
        address, server._forkserver_address = server._forkserver_address, None
        if address is not None and not util.is_abstract_socket_namespace(address):
            with contextlib.suppress(OSError):
                os.unlink(address)


def _reaped(pid: int, wait: float | None) -> bool:
    """Wait up to ``wait`` seconds (None: for ever) for child ``pid`` to exit; whether it has (and was reaped)."""
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            done, _ = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:  # reaped already
            return True
        if done:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def zygote_pid() -> int | None:
    """The zygote's process id, once it runs (for tests and benchmarks)."""
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)


class Forked:
    """A forked process with the parts of :class:`subprocess.Popen`'s interface the launcher uses."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid: int = process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:  # never signal a pid that may have been reused
            with contextlib.suppress(ProcessLookupError):  # exited, and reaped, since: as subprocess.Popen does
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork(target: Callable[..., Any], *args: Any, name: str = "splitfed") -> Forked:
    """Start ``target(*args)`` in a child of the zygote (starting the zygote first if need be)."""
    process = context().Process(target=target, args=args, name=name, daemon=False)
    try:
        with _main_left_alone():
            process.start()
    except (EOFError, OSError) as exc:  # the zygote died: while preloading, or since (out of memory, killed)
        raise _zygote_died(exc) from exc
    return Forked(process)


def _zygote_died(exc: BaseException) -> SplitFedError:
    """The error for a fork that found no zygote: how it ended, and how to do without one."""
    pid = zygote_pid()
    how = "died"
    if pid is not None:
        with contextlib.suppress(ChildProcessError):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
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


@contextlib.contextmanager
def _main_left_alone() -> Iterator[None]:
    """Keep multiprocessing from running the launcher's ``__main__`` script again in the child.

    It would, to find targets defined there; ours live in splitfed's modules. A user's script
    that calls ``splitfed.run()`` without an ``if __name__ == "__main__":`` guard would
    otherwise start a run inside each of its own parties."""
    with _main_lock:  # two threads forking at once would each restore the other's stand-in
        main = sys.modules["__main__"]
        with _spec_replaced(main):
            yield


@contextlib.contextmanager
def _spec_replaced(main: Any) -> Iterator[None]:
    """Give ``main`` a ``__spec__`` named "__main__" for the block, then put back what it had."""
    had, spec = hasattr(main, "__spec__"), getattr(main, "__spec__", None)
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)  # multiprocessing leaves "__main__" be
    try:
        yield
    finally:
        if had:
            main.__spec__ = spec
        else:
            del main.__spec__


def peak_queue() -> Any:
    """Where each forked party puts ``(name, peak RSS in KiB)`` as it finishes."""
    return context().SimpleQueue()


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
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # one sent since the fork stops it now


def _bind_to_zygote(title: str) -> None:
    """Linux: name this process (``ps``, ``top``) and have it stopped (SIGTERM) should the zygote die.

    The zygote outlives its children unless killed; then its children, orphaned and no longer
    reported to the launcher, stop cleanly instead of running on unseen."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return
    if hasattr(libc, "prctl"):
        libc.prctl(15, ctypes.c_char_p(title.encode()[:15]), 0, 0, 0)  # PR_SET_NAME
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def run_party(
    argv: list[str], env: dict[str, str], cwd: str, stdout: str | None, stderr: str | None, peaks: Any
) -> None:
    """The body of a forked party: ``splitfed.cli.main(argv)``, then its peak memory, then its exit status."""
    enter(argv, env, cwd, stdout, stderr)
    from splitfed.cli import main

    try:
        code = main(argv)
    finally:
        atexit._run_exitfuncs()  # what a normal interpreter exit would run; multiprocessing ends with os._exit
    peaks.put((argv[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    sys.exit(code)


def use_zygote() -> bool:
    """Whether local runs fork their parties from the zygote (POSIX with fork; ``SPLITFED_NO_ZYGOTE`` unset)."""
    return os.environ.get(NO_ZYGOTE, "") in ("", "0") and "forkserver" in multiprocessing.get_all_start_methods()
