"""SFLv1 (SplitFed, Thapa et al., AAAI 2022).

All clients train at once. The server keeps one copy of the server half per client
and trains it on that client's activations only; at round end the client halves and
the server copies are each averaged (FedAvg, weighted by sample count) and every copy
starts the next round from the average. Optimizer state (momentum, Adam moments)
belongs to each copy and persists across batches and rounds; only weights are averaged.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from splitfed.aggregation import fedavg
from splitfed.devices import cores
from splitfed.metrics import Tally
from splitfed.peers import Clients
from splitfed.protocol import ProtocolSpec, RoundResult

from .concurrent_steps import Lockstep, step_pool
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
        if self.pool is None:
            weights = clients.gather("weights", on={"forward": self.forward_handler(clients, tally)})
        else:  # every client still training sends a batch, and the server steps their copies at once
            finish = partial(self.finish_forward, clients, tally)
            together = Lockstep(clients, self.step_forward, finish, self.pool)
            weights = clients.gather("weights", on={"forward": together.add}, each=together.leave)
        self.average_server_copies()
        self.average_clients(clients, weights)
        return RoundResult(tally)

    def average_server_copies(self) -> None:
        order = list(self.clients)
        avg = fedavg([self.halves[p].state_dict() for p in order], [float(self.n_train[p]) for p in order])
        for p in order:
            self.halves[p].load_state_dict(avg)


SPEC = ProtocolSpec(
    name="sflv1",
    summary="SplitFed v1: clients train in parallel, one server-half copy per client, both halves FedAvg'd per round",
    server=SFLv1Server,
    client=SFLClient,
    smashed=True,
    messages=SFL_MESSAGES,
)
