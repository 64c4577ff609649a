"""The client of SplitFed (SFLv1 and SFLv2 alike): it holds the client half and its data.

Per batch: forward the client half, send the cut activations with the labels, get the
gradient at the cut back, finish backward and step. Per round: send the half's
weights with the sample count, load the average the server returns. With ``--labels client``
the client also runs the model's last block(s) on the server's output and keeps its labels
(:mod:`.label_private`): the same loop, one more round trip per batch; ``--label-clip``/``--label-noise``
defend the gradient it returns, and ``--heads local`` keeps its head out of the round-end exchange.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import torch
from torch import nn

from splitfed.data.shards import ClientShard, batch_order, client_shard
from splitfed.devices import autocast
from splitfed.metrics import Tally
from splitfed.models import build_model, resolve_cut, split_model, split_three
from splitfed.optim import make_optimizer
from splitfed.peers import Server
from splitfed.protocol import Assignment, ClientRole, DataRequest
from splitfed.wire import Message

from .defences import ACTS_STREAM, EVAL_STREAM, GRAD_STREAM, Defence, client_backward, noise_generator
from .handshake import describe_shard
from .label_private import gradient_defence, head_blocks, head_eval, head_step, heads_local, labels_on_client
from .split_steps import from_wire, infer, state_copy, to_wire

log = logging.getLogger(__name__)

EVAL_BATCH = 256


def load_shard(assignment: Assignment, data: DataRequest) -> ClientShard:
    """This client's rows: its slice of a shared source, or the whole local dataset."""
    whole = data.shard == "all"
    return client_shard(
        data.source,
        clients=1 if whole else assignment.clients,
        client=0 if whole else assignment.index,
        scheme=data.partition,
        test_split=data.test_split,
        test_fraction=data.test_fraction,
        seed=data.seed,
        augment=assignment.config.augment,
        val_fraction=assignment.config.val_fraction,
    )


class SFLClient(ClientRole):
    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        super().__init__(assignment, data, device, name)
        self.shard = load_shard(assignment, data)
        cfg = self.config
        full = build_model(cfg.model, self.shard.shape, len(self.shard.classes), cfg.seed)
        cut = resolve_cut(cfg.model, cfg.cut, full)
        #: the blocks this client runs before the server's (its front) and, with --labels client, after them
        #: (its head); ``half`` holds both, as one state to send, average and load
        self.front, self.head = split_model(full, cut)[0], None
        if labels_on_client(cfg):
            self.front, _, self.head = split_three(full, cut, head_blocks(cfg))
        blocks = [*self.front._modules.items(), *(self.head._modules.items() if self.head is not None else [])]
        self.half = nn.Sequential(OrderedDict(blocks)).to(device)
        self.train_tally = Tally(len(self.shard.classes))  # the label holder's own sums (--labels client)
        self.opt = make_optimizer(self.half.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.defence = Defence.of(cfg)
        self.grad_defence = gradient_defence(cfg)  # --labels client: on the gradient at the head's input
        #: --heads local: the head never leaves this client, so a resumed run needs this client's own copy
        self.local_head = self.head is not None and heads_local(cfg)
        self.state_required = self.local_head
        self.codec = {"acts": cfg.wire_compress} if cfg.wire_compress != "none" else {}
        if self.head is not None:  # the label settings come from the server's welcome: say which this client runs
            log.info(
                "%s: labels stay here (head of %d block(s), heads %s, label clip %g, label noise %g)",
                name,
                head_blocks(cfg),
                "local" if self.local_head else "averaged",
                cfg.option("label_clip", 0.0),
                cfg.option("label_noise", 0.0),
            )

    def describe(self) -> dict:
        return describe_shard(self.shard)

    def setup(self, server: Server, ack: Message) -> None:
        if ack.tensors:  # a resumed run: start from the checkpointed client half
            self.load_shared(ack.tensors)

    def sync(self, ack: Message) -> None:
        self.load_shared(ack.tensors)

    def shared(self) -> dict[str, torch.Tensor]:
        """The weights this client sends for averaging: front and head, or (--heads local) its front only."""
        state = state_copy(self.half)
        if not self.local_head:
            return state
        return {k: v for k, v in state.items() if not k.startswith(self._heads)}

    @property
    def _heads(self) -> tuple[str, ...]:
        return tuple(f"{name}." for name in self.head._modules)

    def load_shared(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load the averaged (or checkpointed) weights; with --heads local, all but the head, which stays ours."""
        if not self.local_head:
            self.half.load_state_dict(tensors)
            return
        front = {k: v for k, v in tensors.items() if not k.startswith(self._heads)}
        self.half.load_state_dict({**state_copy(self.half), **front})

    def state_dict(self) -> dict:
        state = {"optimizer": self.opt.state_dict()}
        return {**state, "head": state_copy(self.head)} if self.local_head else state

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        if self.local_head:
            self.head.load_state_dict(state["head"])

    def train_round(self, server: Server, round: int) -> None:
        cfg, s = self.config, self.shard
        self.half.train()
        self.train_tally = Tally(len(s.classes))
        for epoch in range(cfg.local_epochs):
            batches = batch_order(
                len(s.train_y), cfg.batch_size, seed=cfg.seed, client=self.assignment.index, round=round, epoch=epoch
            )
            for i, rows in enumerate(batches):
                last = epoch == cfg.local_epochs - 1 and i == len(batches) - 1
                x, y = s.train_batch(
                    rows, seed=cfg.seed, client=self.assignment.index, round=round, epoch=epoch, step=i
                )
                head_noise = self.noise(round, epoch, i, GRAD_STREAM) if self.grad_defence.noise else None
                self.train_batch(
                    server, x, y, last=last, step=i, noise=self.noise(round, epoch, i), head_noise=head_noise
                )
        self.exchange_weights(server)

    def noise(self, round: int, epoch: int, step: int, salt: int = ACTS_STREAM) -> torch.Generator | None:
        """The batch's private noise stream for the activations when --dp-noise is on, or (``salt``
        GRAD_STREAM) for the gradient at the head's input."""
        if salt == ACTS_STREAM and not self.defence.noise:
            return None
        return noise_generator(self.config.seed, self.assignment.index, round, epoch, step, salt)

    def train_batch(
        self,
        server: Server,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        last: bool,
        step: int,
        noise: torch.Generator | None = None,
        head_noise: torch.Generator | None = None,
    ) -> None:
        x = x.to(self.device)
        with autocast(self.device, self.config.precision):
            acts = self.front(x)
        sent = self.defence.release(acts, noise)  # clipped and noised here, before anything is encoded
        tensors = {"acts": to_wire(sent, self.config.wire_dtype)}
        if self.head is None:
            tensors["labels"] = y
        msg = Message("forward", meta={"last": last}, tensors=tensors, step=step, codec=self.codec)
        self.opt.zero_grad(set_to_none=True)
        if self.head is None:
            reply = server.request(msg, "gradient")
        else:  # the labels stay here: the head runs on the middle's output and returns its input's gradient
            reply = self.head_round_trip(server, server.request(msg, "middle"), y.to(self.device), step, head_noise)
        client_backward(sent, from_wire(reply.tensors["grad"], self.device, sent.dtype), self.defence.penalty(x, acts))
        self.opt.step()

    def head_round_trip(
        self, server: Server, middle: Message, y: torch.Tensor, step: int, noise: torch.Generator | None = None
    ) -> Message:
        """Head forward and backward on the middle's output (``--labels client``); the server's reply to
        the gradient at the head's input (clipped and noised here under --label-clip/--label-noise, before
        anything is encoded), which carries the gradient at the cut."""
        cfg = self.config
        out = from_wire(middle.tensors["acts"], self.device)
        grad, logits, counts = head_step(self.head, out, y, cfg.label_smoothing, cfg.precision)
        self.train_tally.add(logits, y, counts["loss_sum"])
        grad = self.grad_defence.release(grad, noise)
        msg = Message("headgrad", tensors={"grad": to_wire(grad, cfg.wire_dtype)}, step=step, codec=self.grad_codec)
        return server.request(msg, "gradient")

    @property
    def grad_codec(self) -> dict[str, str]:
        return {"grad": self.config.wire_compress} if self.config.wire_compress != "none" else {}

    def exchange_weights(self, server: Server) -> None:
        meta: dict = {"n": len(self.shard.train_y)}
        if self.head is not None:  # the round's training sums, never per batch, with no confusion matrix
            meta["train"] = {k: v for k, v in self.train_tally.to_meta().items() if k != "confusion"}
        reply = server.request(Message("weights", meta=meta, tensors=self.shared()), "weights")
        self.load_shared(reply.tensors)

    @torch.inference_mode()
    def evaluate(self, server: Server, round: int) -> dict:
        rows_x, rows_y = self.shard.eval_set(self.eval_split)
        tally = Tally(len(self.shard.classes))
        self.half.eval()
        for start in range(0, len(rows_y), EVAL_BATCH):
            x, y = rows_x[start : start + EVAL_BATCH], rows_y[start : start + EVAL_BATCH]
            noise = self.noise(round, EVAL_STREAM, start)
            with autocast(self.device, self.config.precision):
                released = self.defence.release(infer(self.front, x.to(self.device)), noise)
                acts = to_wire(released, self.config.wire_dtype)
            if self.head is None:
                server.request(Message("eval", tensors={"acts": acts, "labels": y}, codec=self.codec), "eval_result")
                continue
            middle = server.request(Message("eval", tensors={"acts": acts}, codec=self.codec), "middle")
            logits = head_eval(self.head, from_wire(middle.tensors["acts"], self.device), self.config.precision)
            tally.add(logits, y, float(torch.nn.functional.cross_entropy(logits, y.to(logits.device), reduction="sum")))
        self.half.train()
        return tally.to_meta() if self.head is not None else {}
