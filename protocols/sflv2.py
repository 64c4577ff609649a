"""SFLv2 (SplitFed, Thapa et al., AAAI 2022).

One server half, trained on the clients' activations in turn, in a fresh random
order each round (seeded, so runs repeat). Two orders are offered:

* ``sequential`` (default, as the reference code): a client runs its whole local
  epoch(s) in its turn, then the next client starts;
* ``interleaved`` (as the paper describes): one batch per client in turn, round-robin.

Client halves are averaged (FedAvg, weighted by sample count) at round end; the single
server half is not averaged. Optimizer state persists across batches and rounds.
"""

from __future__ import annotations

import numpy as np

from splitfed.errors import ProtocolError
from splitfed.metrics import Tally
from splitfed.peers import Clients
from splitfed.protocol import RoundResult
from splitfed.wire import Message

from .declarations import SFLV2
from .label_private import LABEL_PRIVATE_MESSAGES
from .label_private import validate as validate_split
from .sfl_client import SFLClient
from .sfl_server import SFL_MESSAGES, SFLServerBase


class SFLv2Server(SFLServerBase):
    def half_keys(self) -> list[str]:
        return ["shared"]

    def half_for(self, peer: str) -> str:
        return "shared"

    def turn_order(self, round: int, names: list[str]) -> list[str]:
        rng = np.random.default_rng([self.config.seed, round])
        return [names[i] for i in rng.permutation(len(names))]

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        interleaved = self.config.option("order") == "interleaved"
        tally = Tally(len(self.classes))
        active, turn = self.turn_order(round, clients.names), 0
        waiting: dict[str, Message] = {}  # forwards held back until their sender's turn
        #: --labels client: the client whose batch is half done (its forward served, its head's gradient
        #: to come) and whether that batch is its last; the turn moves on only once the batch is finished
        open_step: list[tuple[str, bool]] = []

        def advance(current: str, last: bool) -> None:
            nonlocal turn
            if last:
                active.remove(current)
            elif interleaved:
                turn += 1
            turn = turn % len(active) if active else 0

        def serve_turns() -> None:
            while not open_step and active and active[turn] in waiting:
                current = active[turn]
                batch = waiting.pop(current)
                self.forward_step(clients, current, batch, tally)
                if self.private:
                    open_step.append((current, bool(batch.meta.get("last"))))
                else:
                    advance(current, bool(batch.meta.get("last")))

        def forward(peer: str, msg: Message) -> None:
            waiting[peer] = msg
            serve_turns()

        def finish(peer: str, msg: Message) -> None:
            if not open_step or open_step[0][0] != peer:
                raise ProtocolError(f"{peer} sent a head gradient for a batch the server did not forward")
            self.forward_step(clients, peer, msg, tally)
            advance(*open_step.pop())
            serve_turns()

        def skip(peer: str) -> None:
            """A lost client's turn is skipped; the next one's batches are served."""
            nonlocal turn
            waiting.pop(peer, None)
            if open_step and open_step[0][0] == peer:
                open_step.clear()
                self.open.pop(peer, None)
            if peer in active:
                if active.index(peer) < turn:
                    turn -= 1
                active.remove(peer)
                turn = turn % len(active) if active else 0
                serve_turns()

        on = {"forward": forward, "headgrad": finish} if self.private else {"forward": forward}
        self.average_clients(clients, clients.gather("weights", on=on, lost=skip), tally)
        return RoundResult(tally)


SPEC = SFLV2.with_roles(
    server=SFLv2Server,
    client=SFLClient,
    messages=SFL_MESSAGES | LABEL_PRIVATE_MESSAGES,
    validate=validate_split,
)
