"""FedAvg (McMahan et al.): each client trains the whole model on its own rows for
``--local-epochs``, then the server averages the weights by sample count.

The baseline split learning is compared against. It runs over the same transport as the
split protocols. During local training a client sends heartbeats so the server can
tell a slow client from a dead one.
"""

from __future__ import annotations

from typing import Any

import torch

from splitfed.aggregation import fedavg
from splitfed.metrics import Tally
from splitfed.models import build_model
from splitfed.optim import make_optimizer
from splitfed.peers import Clients, Server
from splitfed.protocol import Assignment, ClientRole, DataRequest, RoundResult, ServerRole
from splitfed.wire import Message

from .declarations import FEDAVG
from .handshake import Joined, check_joiner, describe_shard
from .local_training import evaluate_local, train_local
from .sfl_client import load_shard
from .split_steps import state_copy


class FedAvgClient(ClientRole):
    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        super().__init__(assignment, data, device, name)
        cfg = self.config
        self.shard = load_shard(assignment, data)
        self.model = build_model(cfg.model, self.shard.shape, len(self.shard.classes), cfg.seed).to(device)
        self.opt = make_optimizer(self.model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def describe(self) -> dict[str, Any]:
        return describe_shard(self.shard)

    def setup(self, server: Server, ack: Message) -> None:
        if ack.tensors:  # a resumed run
            self.model.load_state_dict(ack.tensors)

    def sync(self, ack: Message) -> None:
        if ack.tensors:  # before round 1 ends there is no average yet: the seeded start is everyone's
            self.model.load_state_dict(ack.tensors)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])

    def train_round(self, server: Server, round: int) -> None:
        tally = train_local(
            self.model,
            self.opt,
            self.shard,
            self.config,
            round=round,
            client=self.assignment.index,
            device=self.device,
            on_batch=server.heartbeat,
        )
        meta = {"n": len(self.shard.train_y), **tally.to_meta()}
        reply = server.request(Message("weights", meta=meta, tensors=state_copy(self.model)), "weights")
        self.model.load_state_dict(reply.tensors)

    def evaluate(self, server: Server, round: int) -> dict[str, Any]:
        return evaluate_local(
            self.model, self.shard, self.device, split=self.eval_split, precision=self.config.precision
        ).to_meta()


class FedAvgServer(ServerRole):
    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        self.joined = Joined.from_ready(ready)
        self.classes = self.joined.classes
        self.state: dict[str, torch.Tensor] = dict(self.resume["model"]) if self.resume else {}
        return self.joined.facts

    partial = True

    def start(self, peer: str) -> Message | None:
        return Message("ack", tensors=self.state) if self.state else None

    def current(self, peer: str) -> Message:
        return Message("ack", tensors=self.state)

    def join(self, peer: str, ready: dict[str, Any]) -> None:
        # the weights of the average come with each client's own message; its data must be like the others'
        check_joiner(peer, ready, self.joined.classes, self.joined.shape)

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        weights = clients.gather("weights")
        tally = Tally(len(self.classes))
        for msg in weights.values():
            tally.add_meta(msg.meta)
        self.state = fedavg([m.tensors for m in weights.values()], [float(m.meta["n"]) for m in weights.values()])
        clients.reply_all(Message("weights", tensors=self.state))
        return RoundResult(tally)

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        tally = Tally(len(self.classes))
        for msg in clients.gather("eval_done").values():
            tally.add_meta(msg.meta)
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {"model": self.state}


SPEC = FEDAVG.with_roles(server=FedAvgServer, client=FedAvgClient, messages=frozenset({"weights"}))
