"""Centralised training: one process, the unsplit model, all training rows pooled.

The reference upper line the federated and split protocols are compared against. It
pools exactly the rows the clients of a distributed run would hold (the same train/test
split), and trains on them in the batch order a single FedAvg client would use.
"""

from __future__ import annotations

from typing import Any

from splitfed.data.shards import client_shard
from splitfed.models import build_model
from splitfed.optim import make_optimizer
from splitfed.peers import Clients, Server
from splitfed.protocol import ClientRole, RoundResult, ServerRole
from splitfed.wire import Message

from .declarations import CENTRALIZED
from .local_training import evaluate_local, train_local
from .split_steps import state_copy


class CentralizedTrainer(ServerRole):
    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        cfg = self.config
        self.shard = client_shard(
            cfg.data,
            clients=1,
            client=0,
            scheme="iid",
            test_split=cfg.test_split,
            test_fraction=cfg.test_fraction,
            seed=cfg.seed,
            augment=cfg.augment,
            val_fraction=cfg.val_fraction,
        )
        self.classes = self.shard.classes
        self.model = build_model(cfg.model, self.shard.shape, len(self.classes), cfg.seed).to(self.device)
        self.opt = make_optimizer(self.model.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        if self.resume is not None:
            self.model.load_state_dict(self.resume["model"])
            if "optimizer" in self.resume:
                self.opt.load_state_dict(self.resume["optimizer"])
        return {
            "classes": self.classes,
            "input_shape": list(self.shard.shape),
            "client_data": {"centralized": {"n_train": len(self.shard.train_y), "n_test": len(self.shard.test_y)}},
        }

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        return RoundResult(
            train_local(self.model, self.opt, self.shard, self.config, round=round, client=0, device=self.device)
        )

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        return RoundResult(
            evaluate_local(self.model, self.shard, self.device, split=self.eval_split, precision=self.config.precision)
        )

    def checkpoint(self) -> dict[str, Any]:
        return {"model": state_copy(self.model), "optimizer": self.opt.state_dict()}


class _NoClient(ClientRole):  # centralised training has no clients; the runtime never starts one
    def setup(self, server: Server, ack: Message) -> None:
        raise NotImplementedError

    train_round = evaluate = setup  # type: ignore[assignment]


SPEC = CENTRALIZED.with_roles(server=CentralizedTrainer, client=_NoClient)
