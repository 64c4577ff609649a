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
from splitfed.protocol import Assignment, ClientRole, DataRequest, ProtocolSpec, RoundResult, ServerRole
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.wire import Message

from .handshake import Joined, ready_message
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

    def setup(self, link: ClientLink) -> None:
        ack = link.request(ready_message(self.shard), expect=("ack",))
        if ack.tensors:  # a resumed run
            self.model.load_state_dict(ack.tensors)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])

    def train_round(self, link: ClientLink, round: int) -> None:
        tally = train_local(
            self.model,
            self.opt,
            self.shard,
            self.config,
            round=round,
            client=self.assignment.index,
            device=self.device,
            on_batch=link.heartbeat,
        )
        meta = {"n": len(self.shard.train_y), **tally.to_meta()}
        reply = link.request(Message("weights", meta=meta, tensors=state_copy(self.model)), expect=("weights",))
        self.model.load_state_dict(reply.tensors)

    def evaluate(self, link: ClientLink, round: int) -> None:
        link.send(Message("eval_done", meta=evaluate_local(self.model, self.shard, self.device).to_meta()))


class FedAvgServer(ServerRole):
    def setup(self, link: ServerLink) -> dict[str, Any]:
        self.joined = Joined.gather(link)
        self.classes = self.joined.classes
        self.state: dict[str, torch.Tensor] = dict(self.resume["model"]) if self.resume else {}
        self.joined.ack(link, start=self.state or None)
        return self.joined.facts

    def train_round(self, link: ServerLink, round: int) -> RoundResult:
        weights: dict[str, Message] = {}
        tally = Tally(len(self.classes))
        while len(weights) < len(self.joined.clients):
            peer, msg = link.recv(expect=("weights",))
            weights[peer] = msg
        order = self.joined.clients
        for p in order:
            tally.add_meta(weights[p].meta)
        self.state = fedavg([weights[p].tensors for p in order], [float(weights[p].meta["n"]) for p in order])
        for peer in order:
            link.reply(peer, Message("weights", tensors=self.state))
        return RoundResult(tally)

    def evaluate(self, link: ServerLink, round: int) -> RoundResult:
        reports: dict[str, dict] = {}
        while len(reports) < len(self.joined.clients):
            peer, msg = link.recv(expect=("eval_done",))
            reports[peer] = msg.meta
        tally = Tally(len(self.classes))
        for peer in self.joined.clients:
            tally.add_meta(reports[peer])
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {"model": self.state}


SPEC = ProtocolSpec(
    name="fedavg",
    summary="FedAvg baseline: each client trains the whole model locally, weights averaged by sample count",
    server=FedAvgServer,
    client=FedAvgClient,
)
