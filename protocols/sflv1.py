"""SFLv1 (SplitFed, Thapa et al., AAAI 2022).

All clients train at once. The server keeps one copy of the server half per client
and trains it on that client's activations only; at round end the client halves and
the server copies are each averaged (FedAvg, weighted by sample count) and every copy
starts the next round from the average. Optimizer state (momentum, Adam moments)
belongs to each copy and persists across batches and rounds; only weights are averaged.
"""

from __future__ import annotations

from typing import Any

import torch

from splitfed.aggregation import fedavg
from splitfed.devices import cores
from splitfed.metrics import ClientTallies, Tally
from splitfed.optim import clip_before_step, lr_at, make_optimizer
from splitfed.peers import Clients
from splitfed.protocol import RoundResult
from splitfed.wire import Message

from .concurrent_steps import gather_side_by_side, step_pool
from .declarations import SFLV1
from .label_private import LABEL_PRIVATE_MESSAGES
from .label_private import validate as validate_split
from .sfl_client import SFLClient
from .sfl_server import SFL_MESSAGES, SFLServerBase


class SFLv1Server(SFLServerBase):
    #: how many copies step side by side; None: as many as the cores hold at this process's torch threads
    #: each (1: one after the other, as the batches arrive)
    step_workers: int | None = None

    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        facts = super().setup(clients, ready)
        n = len(self.clients)
        if self.step_workers is None:
            self.pool = step_pool(n, torch.get_num_threads(), cores())
        else:
            self.pool = step_pool(n, 1, self.step_workers)
        return facts

    def half_keys(self) -> list[str]:
        return list(self.clients)

    def half_for(self, peer: str) -> str:
        return peer

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        tally = Tally(len(self.classes))
        self.keep_copies_for(clients.names, round)
        if self.pool is None:
            weights = clients.gather("weights", on=self.forward_handler(clients, tally), lost=self.discard_copy)
        else:  # each client's batches step in workers, beside the other clients' batches
            # Replies may go out in the order steps finish, so each client's batches are counted in a tally of
            # its own, merged in client order: the figures do not depend on which step finished first.
            order, tallies = list(clients.names), ClientTallies(len(self.classes))

            def finish(peer: str, msg: Message, stepped: Any) -> None:
                self.finish_forward(clients, tallies.of(peer), peer, msg, stepped)

            weights = gather_side_by_side(
                clients, "weights", self.step_kinds(), self.step_forward, finish, self.pool, lost=self.discard_copy
            )
            tallies.merge_into(tally, order)
        self.open.clear()  # --labels client: every finished client closed its forwards; any left was a lost one's
        self.average_server_copies(list(weights))
        self.average_clients(clients, weights, tally)
        return RoundResult(tally)

    def average_server_copies(self, order: list[str]) -> None:
        """FedAvg of the copies of the clients that finished the round; every copy starts the next from it."""
        avg = fedavg([self.halves[p].state_dict() for p in order], [float(self.n_train[p]) for p in order])
        for half in self.halves.values():
            half.load_state_dict(avg)

    # --- the copies' lifetime with partial participation (--clients-per-round, --min-clients) ---
    # With every client in every round (the default) the copies made in setup live for the whole run.
    # Otherwise the server holds copies for the round's participants only: its memory grows with the
    # clients per round, not with the members. A copy (and its optimizer state) lives while its client
    # keeps being sampled; a client sampled again after sitting out gets a fresh copy of the average.

    def keep_copies_for(self, names: list[str], round: int) -> None:
        """Free the copies of clients that sit this round out; make copies for those that lack one
        (with an optimizer that follows the run's recipe: this round's learning rate, --clip-grad)."""
        start, cfg = next(iter(self.halves.values())), self.config  # the copies are equal after averaging
        for peer in names:
            if peer not in self.halves:
                self.halves[peer] = self._copy(start)
                self.opts[peer] = opt = make_optimizer(
                    self.halves[peer].parameters(), cfg.optimizer, lr_at(cfg, round), cfg.momentum, cfg.weight_decay
                )
                clip_before_step(opt, cfg.clip_grad)
        for key in [k for k in self.halves if k not in names]:
            self.discard_copy(key)

    def discard_copy(self, peer: str) -> None:
        """A lost client's copy goes, with what it learnt this round (it is left out of the average)."""
        self.open.pop(peer, None)  # --labels client: a batch it left half done
        if len(self.halves) > 1:  # the last copy is kept: it carries the average to the next round
            self.halves.pop(peer, None)
            self.opts.pop(peer, None)


SPEC = SFLV1.with_roles(
    server=SFLv1Server,
    client=SFLClient,
    messages=SFL_MESSAGES | LABEL_PRIVATE_MESSAGES,
    validate=validate_split,
)
