"""Who takes part in each round: sampling, lost members, rejoins and late joins.

By default every client trains in every round, and a lost client ends the run (the link
reports it within ``--timeout``). With ``--clients-per-round K`` the server samples K of the
connected members each round (seeded by ``--seed`` and the round); the others send ``idle``
and get the round's global weights to evaluate with. With ``--min-clients M`` a member lost
in a round is dropped from it (its work in the round is left out) and the round finishes with
the others; nobody can join mid-round, so one left with fewer than M is flagged in
metrics.jsonl. A round starts only with M members connected: at a round boundary with fewer,
the server waits up to ``--rejoin-timeout`` for members to (re)join, then fails keeping the
checkpoint. A planned participant lost between the plan and the round's start is replaced
by a member that was to sit out, as long as M would not otherwise train.

A member that comes back under its name (a new process; with CurveZMQ, the same key) or
a client with a new name that arrives after the start sends ``hello`` as usual; it is held
until the next round boundary, then welcomed (a member with its old data index, a newcomer
with the next free one: it brings its own data, ``--shard all``) and, once its ``ready``
matches the run's classes and input shape, given the current global weights.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from splitfed.config import TRAINING_FIELDS, RunConfig
from splitfed.errors import ConfigError, PeerLostError, RemoteError, SplitFedError
from splitfed.peers import Clients
from splitfed.protocol import DATA_REPORT
from splitfed.transport.link import ServerLink
from splitfed.wire import Message

log = logging.getLogger(__name__)


class QuorumError(SplitFedError):
    """Fewer clients than --min-clients remain for a round."""


def check_partial(config: RunConfig) -> None:
    """Refuse --clients-per-round and --min-clients for protocols whose every party is needed every round."""
    from splitfed import registry

    if (config.per_round < config.clients or config.min_clients) and not registry.get(config.protocol).server.partial:
        raise ConfigError(
            f"{config.protocol} trains with every client in every round: --clients-per-round and --min-clients "
            "work with sflv1, sflv2, sl and fedavg (see the README's failure section)"
        )


def sample(names: list[str], k: int, seed: int, rnd: int) -> list[str]:
    """``k`` of ``names`` (all if there are no more), chosen by the run's seed and the round; in client order."""
    if len(names) <= k:
        return list(names)
    picked = set(np.random.default_rng([seed, rnd, 16]).choice(len(names), size=k, replace=False).tolist())
    return [p for i, p in enumerate(names) if i in picked]


class Membership:
    """The server's record of members and participants; installs itself on :class:`Clients`."""

    def __init__(self, config: RunConfig, link: ServerLink, clients: Clients, version: str) -> None:
        self.config, self.link, self.clients, self.version = config, link, clients, version
        self.index_of = {p: i for i, p in enumerate(link.clients)}  # a member's data shard, kept for its rejoin
        self.pending: dict[str, dict[str, Any]] = {}  # hellos held until the next round boundary: name -> hello
        self.idle: set[str] = set()  # sat out and asked for the weights before training ended
        self.drafted: set[str] = set()  # were to sit out, train in place of a planned participant that went
        self.role: Any = None  # set once this round's training is over
        self.started: Any = None  # the role, while the round trains (a drafted member gets its weights)
        self.participants: list[str] = []
        self.short = False  # the round finished with fewer than --min-clients of its clients
        self.lost: list[str] = []  # since the last metrics row
        self.joined: list[str] = []  # at this round's start
        self.partial = config.per_round < config.clients or config.min_clients > 0
        link.accepting = self.partial  # rejoins and late joins need an open door
        clients.background = {"hello": self._hello, "idle": self._idle}
        if config.min_clients:
            clients.on_lost = self._drop

    # --- a round's phases ---

    def plan(self, rnd: int) -> list[str]:
        """Choose round ``rnd``'s participants among the connected members (all of them by default)."""
        k = self.config.per_round if self.config.clients_per_round else len(self.link.clients)
        self.participants = sample(self.link.clients, k, self.config.seed, rnd)
        return self.participants

    def begin(self, rnd: int, role: Any) -> None:
        """Training starts: planned participants lost since the plan are replaced while fewer than M remain."""
        self.idle, self.role, self.started, self.drafted, self.short = set(), None, role, set(), False
        here = [p for p in self.participants if p in self.link.clients]
        need = self.config.min_clients - len(here)
        if need > 0 and len(here) < len(self.participants):
            spare = [p for p in self.link.clients if p not in self.participants]
            self.drafted = set(sample(spare, need, self.config.seed, rnd))
            if self.drafted:
                log.warning("round %d: %s train in place of planned clients that went", rnd, ", ".join(self.drafted))
            here = [p for p in self.link.clients if p in here or p in self.drafted]
        if self.participants and not here:  # (a protocol without clients plans none)
            raise QuorumError(self._none_left(rnd, "every client planned for it went before it started"))
        self.participants = here
        self.clients.scope = list(here)
        if len(self.participants) < len(self.link.clients):
            log.info("round %d: %s train", rnd, ", ".join(self.participants))

    def sync_idle(self, role: Any) -> None:
        """After training: every member that sat out gets the round's global weights, to evaluate with; one
        whose ``idle`` comes later (while the others evaluate) is answered as it arrives."""
        self.short = 0 < len(self.clients.names) < self.config.min_clients
        self.clients.scope = None
        self.role, self.started = role, None
        for peer in sorted(self.idle & set(self.link.clients), key=self.link.clients.index):  # lost ones left out
            self.clients.reply(peer, role.current(peer))

    def record(self) -> dict[str, Any]:
        """What metrics.jsonl says about this round's membership."""
        row: dict[str, Any] = {"participants": list(self.participants)}
        if self.lost:  # since the last row: a member lost while the round-end answers went out shows in the next
            row["lost"], self.lost = list(self.lost), []
        if self.joined:
            row["joined"] = list(self.joined)
        if self.short:
            row["below_min_clients"] = True
        return row

    def next_round(self, role: Any, rnd: int, stop: bool) -> None:
        """At a round boundary (every member waits for its ``eval_done`` answer): take in joiners, make sure
        enough are connected, and choose the next round's participants."""
        self.joined = []
        if stop:
            for peer in list(self.pending):
                self.link.reject(peer, "the run is over")
            self.pending.clear()
            return
        self._admit(role, rnd + 1)
        if len(self.link.clients) < self.config.min_clients:
            self._await_quorum(role, rnd + 1)
        self.plan(rnd + 1)

    def answer(self, peer: str, meta: dict[str, Any], role: Any) -> Message:
        """The round-end answer to a member (``ack``; a joiner's carries the global weights)."""
        base = role.current(peer) if peer in self.joined else Message("ack")
        return Message("ack", meta={**meta, "train": peer in self.participants}, tensors=base.tensors)

    # --- handlers the link's gathers call ---

    def _hello(self, peer: str, msg: Message) -> None:
        if msg.meta.get("version") != self.version:
            self.link.reject(peer, f"version mismatch: server runs splitfed {self.version}")
            return
        if not self.partial:
            self.link.reject(peer, "this run has started and takes no new members")
            return
        self.pending[peer] = dict(msg.meta)
        log.info("%s asks to join: it joins at the next round's start", peer)

    def _idle(self, peer: str, msg: Message) -> None:
        if peer in self.drafted:  # it takes a lost participant's place: the weights to start from, and go
            start = self.started.current(peer)
            self.clients.reply(peer, Message("ack", meta={"train": True}, tensors=start.tensors))
        elif peer in self.participants:
            raise SplitFedError(f"{peer} sat out round {self.link.round}, for which it was chosen")
        elif self.role is not None:  # training is over: the weights are ready
            self.clients.reply(peer, self.role.current(peer))
        else:
            self.idle.add(peer)

    def _drop(self, peer: str, exc: PeerLostError) -> None:
        self.link.forget(peer)
        self.idle.discard(peer)  # a member lost while it sat the round out is owed no weights
        self.drafted.discard(peer)
        self.lost.append(peer)
        left, rnd = len(self.clients.names), self.link.round
        if self.clients.scope is None:  # between trainings: the next round boundary counts who is connected
            log.warning("round %d: %s; no longer a member (%d connected)", rnd, exc, left)
            return
        log.warning("round %d: %s; dropped from the round (%d left)", rnd, exc, left)
        if not left:
            raise QuorumError(self._none_left(rnd, str(exc)))
        if left < self.config.min_clients:
            log.warning(
                "round %d: fewer than --min-clients %d of its clients remain; it finishes with them (nobody joins "
                "mid-round), and the next round waits for members",
                rnd,
                self.config.min_clients,
            )

    def _none_left(self, rnd: int, why: str) -> str:
        return (
            f"round {rnd}: {why}, and none of its clients remain, so it cannot finish. The checkpoint of the "
            "last finished round is kept: continue with --resume once members are back"
        )

    # --- joining at a boundary ---

    def _admit(self, role: Any, start: int) -> None:
        """Welcome the held hellos, take their ``ready`` and tell the role; they train from round ``start``."""
        if not self.pending:
            return
        welcomed = [peer for peer, hello in self.pending.items() if self._welcome(peer, hello, start)]
        self.pending = {}
        for peer, meta in self._ready(welcomed).items():
            try:
                role.join(peer, {k: v for k, v in meta.items() if k != DATA_REPORT})
            except ConfigError as exc:  # its data does not fit the run's: refused, and the run goes on
                log.warning("%s refused: %s", peer, exc)
                self.link.reject(peer, str(exc))
                self.link.forget(peer)
                continue
            self.joined.append(peer)
            log.info("%s joined; it takes part from round %d", peer, start)
        self.link.clients.sort(key=lambda p: self.index_of[p])

    def _welcome(self, peer: str, hello: dict[str, Any], start: int) -> bool:
        """Welcome one held hello with its data index; False if it is refused or already gone."""
        index = self.index_of.get(peer)
        if index is None and hello.get("shard") == "auto":
            self.link.reject(
                peer,
                f"{peer} is not a member of this run, and each of the {self.config.clients} shards of the shared "
                "dataset belongs to a member: a new member brings its own data (splitfed client --shard all --data "
                "DATA), or comes back under a member's --name",
            )
            return False
        index = max(self.index_of.values(), default=-1) + 1 if index is None else index
        self.link.register(peer, hello.get("timeout") if isinstance(hello.get("timeout"), (int, float)) else None)
        training = {k: v for k, v in self.config.to_dict().items() if k in TRAINING_FIELDS}
        meta = {"config": training, "index": index, "clients": self.config.clients, "start_round": start}
        try:
            self.link.reply(peer, Message("welcome", meta={**meta, "rejoin": True}))
        except PeerLostError:  # it said hello and went: nothing of it joins
            log.warning("%s went before it could be welcomed; not joined", peer)
            self.link.forget(peer)
            return False
        self.index_of[peer] = index
        return True

    def _ready(self, welcomed: list[str]) -> dict[str, dict[str, Any]]:
        """The ``ready`` of each welcomed joiner; one that goes or fails while it loads its data is a lost
        member (whatever --min-clients says: it never took part), and the run goes on."""
        waiting, got = set(welcomed), {}
        saved, self.link.timeout = self.link.timeout, self.config.join_timeout  # they load their data first
        try:
            while waiting:
                try:
                    peer, msg = self.link.recv(expect=("ready", "hello"))
                except (PeerLostError, RemoteError) as exc:
                    if exc.peer in waiting:
                        waiting.discard(exc.peer)
                        self._lose_joiner(exc)
                    elif isinstance(exc, PeerLostError):  # a member (told a keep-alive): the run's rules apply
                        self.clients.drop(exc)
                    else:
                        raise
                    continue
                if msg.kind == "hello":  # another newcomer: it joins at the next boundary
                    self._hello(peer, msg)
                    continue
                waiting.discard(peer)
                got[peer] = msg.meta
        finally:
            self.link.timeout = saved
        return got

    def _lose_joiner(self, exc: PeerLostError | RemoteError) -> None:
        self.link.forget(exc.peer)
        self.lost.append(exc.peer)
        log.warning("%s went while loading its data (%s); not joined", exc.peer, exc)

    def _await_quorum(self, role: Any, start: int) -> None:
        """Wait up to --rejoin-timeout for enough members to (re)join before round ``start``."""
        need, wait, saved = self.config.min_clients, self.config.rejoin_timeout, self.link.timeout
        deadline = time.monotonic() + wait
        log.warning(
            "before round %d: %d member(s) connected, fewer than --min-clients %d: waiting up to %g s for members "
            "to (re)join",
            start,
            len(self.link.clients),
            need,
            wait,
        )
        try:
            while len(self.link.clients) < need:
                while len(self.link.clients) + len(self.pending) < need:
                    self.link.timeout = deadline - time.monotonic()
                    if self.link.timeout <= 0:
                        raise PeerLostError("clients", "none came back")
                    try:
                        peer, msg = self.clients.recv("hello")
                    except PeerLostError as exc:  # a member that went while it waited: the run's rules apply
                        if exc.peer not in self.link.clients:
                            raise
                        self.clients.drop(exc)
                        continue
                    self._hello(peer, msg)
                self._admit(role, start)
        except PeerLostError:
            raise QuorumError(
                f"before round {start}: {len(self.link.clients)} member(s) connected, fewer than --min-clients "
                f"{need}, and no more came back within --rejoin-timeout {wait:g} s. The checkpoint of the last "
                "finished round is kept: continue with --resume once members are back"
            ) from None
        finally:
            self.link.timeout = saved
