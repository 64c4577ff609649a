"""Who takes part in each round: sampling, lost members, rejoins and late joins.

By default every client trains in every round, and a lost client ends the run (the link
reports it within ``--timeout``). With ``--clients-per-round K`` the server samples K of the
connected members each round (seeded by ``--seed`` and the round); the others send ``idle``
and get the round's global weights to evaluate with. With ``--min-clients M`` a member lost
mid-round is dropped from it (its work in the round is left out) while at least M of the
round's clients remain; at a round's start, with fewer than M connected, the server waits up
to ``--rejoin-timeout`` for members to (re)join, then fails keeping the checkpoint.

A member that comes back under its name (a new process; with CurveZMQ, the same key) or
a client that arrives after the start sends ``hello`` as usual; it is held until the next
round boundary, then welcomed with its old data index (a newcomer: the lowest free one) and
the current global weights.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from splitfed.config import TRAINING_FIELDS, RunConfig
from splitfed.errors import ConfigError, PeerLostError, SplitFedError
from splitfed.peers import Clients
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
        self.pending: dict[str, float | None] = {}  # hellos held until the next round boundary: name -> patience
        self.idle: set[str] = set()  # sat out and asked for the weights before training ended
        self.role: Any = None  # set once this round's training is over
        self.participants: list[str] = []
        self.lost: list[str] = []  # since the last metrics row
        self.joined: list[str] = []  # at this round's start
        self.partial = config.per_round < config.clients or config.min_clients > 0
        link.accepting = self.partial  # rejoins and late joins need an open door
        clients.background = {"hello": self._hello, "idle": self._idle}
        if config.min_clients:
            clients.on_lost = self._drop

    # --- a round's phases ---

    def plan(self, rnd: int) -> list[str]:
        """Choose round ``rnd``'s participants among the connected members."""
        self.participants = sample(self.link.clients, self.config.per_round, self.config.seed, rnd)
        return self.participants

    def begin(self, rnd: int) -> None:
        self.idle, self.role = set(), None
        self.clients.scope = [p for p in self.participants if p in self.link.clients]
        if len(self.participants) < len(self.link.clients):
            log.info("round %d: %s train", rnd, ", ".join(self.participants))

    def sync_idle(self, role: Any) -> None:
        """After training: every member that sat out gets the round's global weights, to evaluate with; one
        whose ``idle`` comes later (while the others evaluate) is answered as it arrives."""
        self.clients.scope = None
        self.role = role
        for peer in sorted(self.idle & set(self.link.clients), key=self.link.clients.index):  # lost ones left out
            self.clients.reply(peer, role.current(peer))

    def record(self) -> dict[str, Any]:
        """What metrics.jsonl says about this round's membership."""
        row: dict[str, Any] = {"participants": list(self.participants)}
        if self.lost:  # since the last row: a member lost while the round-end answers went out shows in the next
            row["lost"], self.lost = list(self.lost), []
        if self.joined:
            row["joined"] = list(self.joined)
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
        patience = msg.meta.get("timeout")
        self.pending[peer] = float(patience) if isinstance(patience, (int, float)) else None
        log.info("%s asks to join: it joins at the next round's start", peer)

    def _idle(self, peer: str, msg: Message) -> None:
        if peer in self.participants:
            raise SplitFedError(f"{peer} sat out round {self.link.round}, for which it was chosen")
        if self.role is not None:  # training is over: the weights are ready
            self.clients.reply(peer, self.role.current(peer))
        else:
            self.idle.add(peer)

    def _drop(self, peer: str, exc: PeerLostError) -> None:
        self.link.forget(peer)
        self.idle.discard(peer)  # a member lost while it sat the round out is owed no weights
        self.lost.append(peer)
        left = len(self.clients.names)
        log.warning("round %d: %s; dropped from the round (%d left)", self.link.round, exc, left)
        if left < self.config.min_clients:
            raise QuorumError(
                f"round {self.link.round}: {exc}, and only {left} of the round's clients remain, fewer than "
                f"--min-clients {self.config.min_clients}. The checkpoint of the last finished round is kept: "
                "continue with --resume, or lower --min-clients"
            )

    # --- joining at a boundary ---

    def _admit(self, role: Any, start: int) -> None:
        """Welcome the held hellos, take their ``ready`` and tell the role; they train from round ``start``."""
        if not self.pending:
            return
        training = {k: v for k, v in self.config.to_dict().items() if k in TRAINING_FIELDS}
        welcomed = []
        for peer, patience in self.pending.items():
            index = self.index_of.get(peer, self._free_index())
            if index is None:
                self.link.reject(peer, f"this run already has its {self.config.clients} members")
                continue
            self.index_of[peer] = index
            self.link.register(peer, patience)
            meta = {"config": training, "index": index, "clients": self.config.clients, "start_round": start}
            try:
                self.link.reply(peer, Message("welcome", meta={**meta, "rejoin": True}))
            except PeerLostError:  # it said hello and went: nothing of it joins
                log.warning("%s went before it could be welcomed; not joined", peer)
                self.link.forget(peer)
                continue
            welcomed.append(peer)
        self.pending = {}
        saved, self.link.timeout = self.link.timeout, self.config.join_timeout  # they load their data first
        try:
            ready = self.clients.gather("ready", among=welcomed)
        finally:
            self.link.timeout = saved
        for peer, msg in ready.items():
            role.join(peer, msg.meta)
            self.joined.append(peer)
            log.info("%s joined; it takes part from round %d", peer, start)
        self.link.clients.sort(key=lambda p: self.index_of[p])

    def _free_index(self) -> int | None:
        taken = set(self.index_of.values())
        return next((i for i in range(self.config.clients) if i not in taken), None)

    def _await_quorum(self, role: Any, start: int) -> None:
        """Wait up to --rejoin-timeout for enough members to (re)join."""
        need, saved = self.config.min_clients, self.link.timeout
        self.link.timeout = self.config.rejoin_timeout
        log.warning("%d member(s) connected, fewer than %d: waiting for rejoins", len(self.link.clients), need)
        try:
            while len(self.link.clients) < need:
                while len(self.link.clients) + len(self.pending) < need:
                    peer, msg = self.clients.recv("hello")
                    self._hello(peer, msg)
                self._admit(role, start)
        except PeerLostError:
            raise QuorumError(
                f"before round {start}: {len(self.link.clients)} member(s) connected, fewer than --min-clients "
                f"{need}, and none came back within --rejoin-timeout {self.config.rejoin_timeout:g} s. The "
                "checkpoint of the last finished round is kept: continue with --resume once members are back"
            ) from None
        finally:
            self.link.timeout = saved
