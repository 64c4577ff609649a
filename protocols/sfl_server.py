"""What the SplitFed servers (SFLv1, SFLv2, SL) share: setup, the server step, evaluation and round-end FedAvg."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from splitfed.aggregation import fedavg
from splitfed.metrics import Tally
from splitfed.models import build_model, resolve_cut, split_model
from splitfed.optim import make_optimizer
from splitfed.peers import Clients
from splitfed.protocol import RoundResult, ServerRole
from splitfed.wire import Message

from .handshake import Joined
from .split_steps import from_wire, server_eval, server_step, state_copy, to_wire

log = logging.getLogger(__name__)

#: the kinds every SplitFed protocol sends: a batch forward and its gradient, round-end weights, test batches
SFL_MESSAGES = frozenset({"forward", "gradient", "weights", "eval", "eval_result"})


class SFLServerBase(ServerRole):
    """Subclasses say how many server halves there are and in which order clients train."""

    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        joined = Joined.from_ready(ready)
        self.clients, self.n_train = joined.clients, joined.n_train
        self.classes, self.shape = joined.classes, joined.shape
        cfg = self.config
        full = build_model(cfg.model, self.shape, len(self.classes), cfg.seed)
        self.cut = resolve_cut(cfg.model, cfg.cut, full)
        client_half, server_half = split_model(full, self.cut)
        self.client_state = state_copy(client_half)
        self.halves = {key: self._copy(server_half) for key in self.half_keys()}
        self.opts = {
            key: make_optimizer(h.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
            for key, h in self.halves.items()
        }
        if self.resume is not None:
            self.client_state = dict(self.resume["client_half"])
            for half in self.halves.values():
                half.load_state_dict(self.resume["server_half"])
            for key, opt_state in zip(self.half_keys(), self.resume.get("server_optimizers", []), strict=False):
                self.opts[key].load_state_dict(opt_state)
        return {**joined.facts, "cut": self.cut}

    def start(self, peer: str) -> Message | None:
        """A resumed run's clients start from the checkpointed client half."""
        return Message("ack", tensors=self.client_state) if self.resume is not None else None

    partial = True

    def current(self, peer: str) -> Message:
        return Message("ack", tensors=self.client_state)

    def join(self, peer: str, ready: dict) -> None:
        self.n_train[peer] = int(ready["n_train"])

    def half_keys(self) -> list[str]:
        raise NotImplementedError

    def half_for(self, peer: str) -> str:
        raise NotImplementedError

    def _copy(self, half: nn.Module) -> nn.Module:
        clone = build_model(self.config.model, self.shape, len(self.classes), self.config.seed)
        server = split_model(clone, self.cut)[1]
        server.load_state_dict(half.state_dict())
        return server.to(self.device)

    def forward_step(self, clients: Clients, peer: str, msg: Message, tally: Tally) -> None:
        key = self.half_for(peer)
        acts = from_wire(msg.tensors["acts"], self.device)
        labels = msg.tensors["labels"].to(self.device)
        grad, logits, loss_sum = server_step(
            self.halves[key], self.opts[key], acts, labels, self.config.label_smoothing
        )
        correct = tally.add(logits, labels, loss_sum)
        reply = Message(
            "gradient",
            meta={"loss": loss_sum / len(labels), "correct": correct},
            tensors={"grad": to_wire(grad, self.config.wire_dtype)},
            step=msg.step,
        )
        clients.reply(peer, reply)

    def average_clients(self, clients: Clients, weights: dict[str, Message]) -> None:
        """FedAvg of the client halves (``weights`` in client order), weighted by sample count;
        everyone gets the average."""
        order = list(weights)
        avg = fedavg([weights[p].tensors for p in order], [float(weights[p].meta["n"]) for p in order])
        self.client_state = avg
        clients.reply_all(Message("weights", tensors=avg))

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        tally = Tally(len(self.classes))

        def test_batch(peer: str, msg: Message) -> None:
            labels = msg.tensors["labels"].to(self.device)
            logits, loss_sum = server_eval(self.eval_half(peer), from_wire(msg.tensors["acts"], self.device), labels)
            correct = tally.add(logits, labels, loss_sum)
            clients.reply(peer, Message("eval_result", meta={"correct": correct, "loss_sum": loss_sum}))

        clients.gather("eval_done", on={"eval": test_batch})
        return RoundResult(tally)

    def eval_half(self, peer: str) -> nn.Module:
        """The server half that tests ``peer``'s rows: its own, or (a client that sat the round out) any copy,
        since the copies are equal after averaging."""
        half = self.halves.get(self.half_for(peer))
        return half if half is not None else next(iter(self.halves.values()))

    def checkpoint(self) -> dict[str, Any]:
        keys = list(self.halves)  # with --clients-per-round, SFLv1 holds copies for the round's clients only
        return {
            "client_half": self.client_state,
            "server_half": state_copy(self.halves[keys[0]]),  # the copies are equal after averaging
            "server_optimizers": [self.opts[k].state_dict() for k in keys],  # one per copy, in client order
        }

    def forward_handler(self, clients: Clients, tally: Tally) -> Callable[[str, Message], None]:
        """Serves a client's training batch at once (SFLv1, SL)."""
        return lambda peer, msg: self.forward_step(clients, peer, msg, tally)
