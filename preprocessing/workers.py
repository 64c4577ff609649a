"""Map a function over worker processes so that a worker which cannot start fails the run.

``multiprocessing.Pool`` respawns a worker whose initializer raised, for ever and without
a word, so one missing import turned into a run that never ended. Here the initializer's
error is kept in the worker and raised with its first task, and the pool is a
``ProcessPoolExecutor``, which never respawns: a worker that dies outright (a crash, the
out-of-memory killer) breaks the pool, and the run stops with an error naming what to try.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, TypeVar

from splitfed.errors import ConfigError, PartyFailedError, SplitFedError

T = TypeVar("T")
R = TypeVar("R")

_START_ERROR: str | None = None  # set in a worker whose initializer failed


class WorkerStartError(ConfigError):
    """A worker's initializer failed (a model it cannot load, a library it cannot import)."""


def describe(exc: Exception) -> str:
    """One line for an exception: our own errors speak for themselves, others are named by type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, SplitFedError) else f"{type(exc).__name__}: {text}"


def start_in_process(initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    """Run ``initializer`` here, with the error a pool worker would report."""
    if initializer is None:
        return
    try:
        initializer(*initargs)
    except Exception as exc:
        raise WorkerStartError(f"a worker could not start: {describe(exc)}") from None


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    global _START_ERROR
    try:
        start_in_process(initializer, initargs)
    except WorkerStartError as exc:  # raising here would only break the pool and lose the message
        _START_ERROR = str(exc)


def _call(fn: Callable[[T], R], arg: T) -> R:
    if _START_ERROR is not None:
        raise WorkerStartError(_START_ERROR)
    return fn(arg)


def map_in_workers(
    fn: Callable[[T], R],
    args: Iterable[T],
    workers: int,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple = (),
    chunksize: int = 8,
) -> Iterator[R]:
    """``fn`` over ``args`` in ``workers`` spawned processes, results in order.

    ``fn`` and ``initializer`` must be importable module-level functions (spawn pickles them
    by name). The first error ends the map and cancels the work not yet started.
    """
    pool = ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(initializer, initargs)
    )
    try:
        yield from pool.map(functools.partial(_call, fn), args, chunksize=chunksize)
    except BrokenProcessPool:
        raise PartyFailedError(
            "a worker process",
            "it exited without a word (a crash, or killed for memory?); rerun with --workers 1 to see its error",
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
