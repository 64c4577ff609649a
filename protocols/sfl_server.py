"""What the SplitFed servers (SFLv1, SFLv2, SL) share: setup, the server step, evaluation and round-end FedAvg."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from splitfed.aggregation import fedavg
from splitfed.errors import ProtocolError
from splitfed.metrics import ClientTallies, Tally
from splitfed.models import build_model, resolve_cut, split_model, split_three
from splitfed.optim import make_optimizer
from splitfed.peers import Clients
from splitfed.protocol import RoundResult, ServerRole
from splitfed.wire import Message

from .concurrent_steps import gather_side_by_side
from .handshake import Joined, check_joiner
from .label_private import head_blocks, labels_on_client, middle_backward, middle_eval, middle_forward
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
        #: --labels client: the server runs the middle blocks; a batch's forward waits here for its head's gradient
        self.private, self.open = labels_on_client(cfg), {}
        server_half = self.server_part(full)
        self.client_state = {
            k: v.detach().clone() for k, v in full.state_dict().items() if k not in server_half.state_dict()
        }
        self.halves = {key: self._copy(server_half) for key in self.half_keys()}
        self.opts = {
            key: make_optimizer(h.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
            for key, h in self.halves.items()
        }
        if self.resume is not None:
            self.client_state = dict(self.resume["client_half"])
            for half in self.halves.values():
                half.load_state_dict(self.resume["server_half"])
            keys = self.resume.get("server_optimizer_keys", self.half_keys())  # older checkpoints: client order
            for key, opt_state in zip(keys, self.resume.get("server_optimizers", []), strict=False):
                if key in self.opts:  # by name: with --clients-per-round only the last round's copies were saved
                    self.opts[key].load_state_dict(opt_state)
        facts = {**joined.facts, "cut": self.cut}
        return {**facts, "labels": "client", "head_blocks": head_blocks(cfg)} if self.private else facts

    def server_part(self, model: nn.Sequential) -> nn.Sequential:
        """The blocks the server runs: all after the cut, or (--labels client) those before the client's head."""
        if self.private:
            return split_three(model, self.cut, head_blocks(self.config))[1]
        return split_model(model, self.cut)[1]

    def start(self, peer: str) -> Message | None:
        """A resumed run's clients start from the checkpointed client half."""
        return Message("ack", tensors=self.client_state) if self.resume is not None else None

    #: where the server halves' steps run side by side (SFLv1's copies); None: one at a time
    pool: ThreadPoolExecutor | None = None

    partial = True

    def current(self, peer: str) -> Message:
        return Message("ack", tensors=self.client_state)

    def join(self, peer: str, ready: dict) -> None:
        check_joiner(peer, ready, self.classes, self.shape)
        self.n_train[peer] = int(ready["n_train"])

    def half_keys(self) -> list[str]:
        raise NotImplementedError

    def half_for(self, peer: str) -> str:
        raise NotImplementedError

    def _copy(self, half: nn.Module) -> nn.Module:
        clone = build_model(self.config.model, self.shape, len(self.classes), self.config.seed)
        server = self.server_part(clone)
        server.load_state_dict(half.state_dict())
        return server.to(self.device)

    def forward_step(self, clients: Clients, peer: str, msg: Message, tally: Tally) -> None:
        """Serve one training batch: step ``peer``'s server half and reply with the gradient at the cut."""
        self.finish_forward(clients, tally, peer, msg, self.step_forward(peer, msg))

    def step_forward(self, peer: str, msg: Message) -> Any:
        """The maths of one training batch on ``peer``'s server half: touches that half and its optimizer only,
        so steps for different copies may run in different threads (SFLv1)."""
        key = self.half_for(peer)
        cfg = self.config
        if self.private:
            return self.step_middle(key, peer, msg)
        acts = from_wire(msg.tensors["acts"], self.device)
        labels = msg.tensors["labels"].to(self.device)
        return server_step(self.halves[key], self.opts[key], acts, labels, cfg.label_smoothing, cfg.precision)

    def step_middle(self, key: str, peer: str, msg: Message) -> torch.Tensor:
        """--labels client: a batch's forward through the middle (kept open until the client's head answers),
        or the backward that finishes it; returns what goes back (the middle's output, the gradient at the cut)."""
        if msg.kind == "headgrad":
            grad = from_wire(msg.tensors["grad"], self.device)
            pending = self.open.pop(peer, None)
            if pending is None:
                raise ProtocolError(f"{peer} sent a head gradient for a batch the server did not forward")
            return middle_backward(self.opts[key], pending, grad)
        acts = from_wire(msg.tensors["acts"], self.device)
        self.open[peer] = middle_forward(self.halves[key], acts, self.config.precision)
        return self.open[peer][1]

    def finish_forward(self, clients: Clients, tally: Tally, peer: str, msg: Message, stepped: Any) -> None:
        """Count the batch and reply to ``peer`` (in the serving thread: tallies and links are not thread-safe).
        ``stepped`` is what :meth:`step_forward` returned: (grad at the cut, logits, loss sum), or one tensor
        with --labels client."""
        if self.private:  # the middle's output, or the gradient at the cut; the client counts its own batches
            kind, name = ("middle", "acts") if msg.kind == "forward" else ("gradient", "grad")
            reply = Message(kind, tensors={name: to_wire(stepped, self.config.wire_dtype)}, step=msg.step)
            clients.reply(peer, self.compressed(reply, name))
            return
        grad, logits, loss_sum = stepped
        labels = msg.tensors["labels"]
        correct = tally.add(logits, labels, loss_sum)
        reply = Message(
            "gradient",
            meta={"loss": loss_sum / len(labels), "correct": correct},
            tensors={"grad": to_wire(grad, self.config.wire_dtype)},
            step=msg.step,
        )
        clients.reply(peer, self.compressed(reply, "grad"))

    def compressed(self, msg: Message, name: str) -> Message:
        """``msg`` with its tensor ``name`` under --wire-compress, if any."""
        if self.config.wire_compress != "none":
            msg.codec = {name: self.config.wire_compress}
        return msg

    def step_kinds(self) -> tuple[str, ...]:
        """The requests of a training batch: its forward, and (--labels client) its head's gradient."""
        return ("forward", "headgrad") if self.private else ("forward",)

    def average_clients(self, clients: Clients, weights: dict[str, Message], tally: Tally | None = None) -> None:
        """FedAvg of the client halves (``weights`` in client order), weighted by sample count;
        everyone gets the average. With --labels client the clients' training sums join ``tally``."""
        order = list(weights)
        if self.private and tally is not None:
            for p in order:
                if not isinstance(weights[p].meta.get("train"), dict):
                    raise ProtocolError(f"{p} sent its weights without its training sums (--labels client)")
                tally.add_meta(weights[p].meta["train"])
        avg = fedavg([weights[p].tensors for p in order], [float(weights[p].meta["n"]) for p in order])
        self.client_state = avg
        clients.reply_all(Message("weights", tensors=avg))

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        tally = Tally(len(self.classes))
        order, tallies = list(clients.names), ClientTallies(len(self.classes))  # see SFLv1Server.train_round

        def test_batch(peer: str, msg: Message) -> Any:
            acts = from_wire(msg.tensors["acts"], self.device)
            if self.private:
                return middle_eval(self.eval_half(peer), acts, self.config.precision)
            labels = msg.tensors["labels"].to(self.device)
            return server_eval(self.eval_half(peer), acts, labels, self.config.precision)

        def answer(peer: str, msg: Message, result: Any) -> None:
            if self.private:  # the client finishes the batch and keeps its own tally
                reply = Message("middle", tensors={"acts": to_wire(result, self.config.wire_dtype)})
                clients.reply(peer, self.compressed(reply, "acts"))
                return
            logits, loss_sum = result
            correct = tallies.of(peer).add(logits, msg.tensors["labels"], loss_sum)
            clients.reply(peer, Message("eval_result", meta={"correct": correct, "loss_sum": loss_sum}))

        if self.pool is None:  # one server half, or one core: serve each test batch as it comes
            reports = clients.gather("eval_done", on={"eval": lambda p, m: answer(p, m, test_batch(p, m))})
        else:  # SFLv1: the copies' test batches side by side; clients that sat out share a copy, so every copy
            # is put in eval mode once, here, rather than by each concurrent test batch
            for half in self.halves.values():
                half.eval()
            try:
                reports = gather_side_by_side(clients, "eval_done", ["eval"], test_batch, answer, self.pool)
            finally:
                for half in self.halves.values():
                    half.train()
        tallies.merge_into(tally, order)
        if self.private:  # each client's test tally, counted where its labels are
            for report in reports.values():
                tally.add_meta(report.meta)
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
            "server_optimizers": [self.opts[k].state_dict() for k in keys],  # one per copy
            "server_optimizer_keys": keys,  # whose copy each belongs to
        }

    def forward_handler(self, clients: Clients, tally: Tally) -> dict[str, Callable[[str, Message], None]]:
        """Serves a client's training batch at once (SFLv1, SL): a handler for each of :meth:`step_kinds`."""
        handler = lambda peer, msg: self.forward_step(clients, peer, msg, tally)  # noqa: E731
        return {kind: handler for kind in self.step_kinds()}
