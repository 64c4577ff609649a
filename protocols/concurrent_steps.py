"""Serving several clients' requests at once, for a server that keeps independent state per client.

SFLv1's server keeps one server-half copy per client; the copies never touch each other
between averages, so a batch of client A and a batch of client B can be stepped at the
same time. Served one after the other (as they arrive), the server is the critical path of
a round and the clients wait for it half the time. Two ways to serve them side by side,
both in worker threads around torch ops (which release the GIL):

* :class:`Overlapped` (used where the transport can be woken from a worker thread) starts
  each request's step as it arrives and replies as soon as that step is done, so one
  client's round trip (the reply, its backward and next forward, the next request) overlaps
  the other clients' steps;
* :class:`Lockstep` holds each client's request until every client still training has one
  pending, steps them all at once with :func:`run_concurrently`, and replies in client order.

Either way each copy sees exactly the batches it saw before, in the same order, so the
results equal the sequential ones (a test checks it to 1e-6).

The helpers know nothing of SplitFed: ``compute`` is the per-request work (run in worker
threads, touching only that client's state) and ``finish`` the bookkeeping and reply (run in
the serving thread, since sockets and tallies are not thread-safe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from splitfed.errors import ProtocolError
from splitfed.wire import Message

T = TypeVar("T")


def run_concurrently(jobs: Sequence[Callable[[], T]], pool: ThreadPoolExecutor | None) -> list[T]:
    """Run ``jobs`` on ``pool`` (in order, without one when there is none or a single job); results in job order."""
    if pool is None or len(jobs) < 2:
        return [job() for job in jobs]
    return [f.result() for f in [pool.submit(job) for job in jobs]]


def step_pool(clients: int, threads_per_step: int, cores: int) -> ThreadPoolExecutor | None:
    """Workers for concurrent steps: as many as fit in ``cores`` at ``threads_per_step`` torch threads each."""
    workers = min(clients, max(1, cores // max(1, threads_per_step)))
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step") if workers > 1 else None


class Lockstep:
    """Hold one request per client until every client still sending has one pending, then serve them together.

    A client blocks on each reply, so one that is still sending and has nothing pending
    always sends again: waiting for it cannot deadlock. A client leaves with :meth:`leave`
    (its closing message arrived, or it dropped out), which may release the others.
    """

    def __init__(
        self,
        order: Iterable[str],
        compute: Callable[[str, Message], Any],
        finish: Callable[[str, Message, Any], None],
        pool: ThreadPoolExecutor | None,
    ) -> None:
        self.order = list(order)  # client order: replies go out in it
        self.active = set(self.order)
        self.compute, self.finish, self.pool = compute, finish, pool
        self.pending: dict[str, Message] = {}

    def add(self, peer: str, msg: Message) -> None:
        """A request from ``peer``: held, and served with the others once everyone still sending has one."""
        self.pending[peer] = msg
        self._serve_if_ready()

    def leave(self, peer: str, msg: Message | None = None) -> None:
        """``peer`` sends no more requests this phase (the signature suits ``gather(each=...)``)."""
        self.active.discard(peer)
        self._serve_if_ready()

    def drop(self, peer: str) -> None:
        """``peer`` was lost: its held request (if any) goes unanswered, and the others stop waiting for it."""
        self.pending.pop(peer, None)
        self.leave(peer)

    def _serve_if_ready(self) -> None:
        if not self.pending or not self.active <= set(self.pending):
            return
        batch = [(p, self.pending[p]) for p in self.order if p in self.pending]
        self.pending.clear()
        jobs = [lambda p=p, m=m: self.compute(p, m) for p, m in batch]
        for (peer, msg), result in zip(batch, run_concurrently(jobs, self.pool), strict=True):
            self.finish(peer, msg, result)


class Overlapped:
    """Step each client's request in a worker as soon as it arrives; reply once its step is done.

    The serving thread calls :meth:`pump` between waits for messages (``gather(pump=...)``);
    a finished step wakes that wait through ``wake`` (thread-safe). A client blocks on each
    reply, so at most one request per client is under way. Replies go out in the order the
    steps finish, so whatever ``finish`` adds up across clients must not depend on that order
    (keep a tally per client and merge them in client order).
    """

    def __init__(
        self,
        compute: Callable[[str, Message], Any],
        finish: Callable[[str, Message, Any], None],
        pool: ThreadPoolExecutor,
        wake: Callable[[], None],
    ) -> None:
        self.compute, self.finish, self.pool, self.wake = compute, finish, pool, wake
        self.running: dict[str, tuple[Message, Future]] = {}
        self.lost: set[str] = set()

    def add(self, peer: str, msg: Message) -> None:
        """A request from ``peer``: its step starts now, in a worker."""
        if peer in self.running:  # two steps of one copy at once would race on its weights
            raise ProtocolError(f"{peer} sent {msg.kind!r} before its previous request was answered")
        future = self.pool.submit(self.compute, peer, msg)
        self.running[peer] = (msg, future)
        future.add_done_callback(lambda _f: self.wake())

    def pump(self) -> bool:
        """Reply to every request whose step is done (a step's error is raised here); whether any is still running."""
        for peer in [p for p, (_, f) in self.running.items() if f.done()]:
            msg, future = self.running.pop(peer)
            if peer not in self.lost:  # a lost client's step, even one that failed, is forgotten
                self.finish(peer, msg, future.result())
        return bool(self.running)

    def drop(self, peer: str) -> None:
        """``peer`` was lost: its step, if one is under way, goes unanswered."""
        self.lost.add(peer)

    def close(self) -> None:
        """Wait for the steps still under way (a lost client's), so that no worker touches state after the phase."""
        wait([f for _, f in self.running.values()])
        self.running.clear()


def gather_side_by_side(
    clients: Any,
    kind: str,
    requests: Iterable[str],
    compute: Callable[[str, Message], Any],
    finish: Callable[[str, Message, Any], None],
    pool: ThreadPoolExecutor,
    lost: Callable[[str], None] | None = None,
) -> dict[str, Message]:
    """``clients.gather(kind)`` while serving the ``requests`` kinds side by side on ``pool``: :class:`Overlapped`
    where the transport can be woken from a worker, else :class:`Lockstep`. ``lost(peer)``: the role forgets a
    lost client's part; its step under way, if any, goes unanswered. No step runs once this returns."""

    def forget(drop: Callable[[str], None]) -> Callable[[str], None]:
        def gone(peer: str) -> None:
            drop(peer)
            if lost is not None:
                lost(peer)

        return gone

    if not clients.can_interrupt:
        together = Lockstep(clients, compute, finish, pool)
        on = {request: together.add for request in requests}
        return clients.gather(kind, on=on, each=together.leave, lost=forget(together.drop))
    overlapped = Overlapped(compute, finish, pool, clients.interrupt)
    try:
        on = {request: overlapped.add for request in requests}
        return clients.gather(kind, on=on, lost=forget(overlapped.drop), pump=overlapped.pump)
    finally:
        overlapped.close()
