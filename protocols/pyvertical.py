"""PyVertical: vertically partitioned split learning, aligned by Private Set Intersection.

Each data owner (client) holds **different features of the same samples**: with K
clients, vertical band k of every image it has (2 clients: the left half and the right
half of an eye crop). The label holder is the server (the "data scientist" of
OpenMined's PyVertical). Owners' sample sets overlap only partly, keyed by a string id.

1. Alignment: PSI (see psi.py) between the server and each owner; the server sends the
   sorted common ids (train and test, by its own split) to every owner, so all share one
   canonical order. No id outside the intersection and no raw feature ever leaves an owner.
2. Training: the server announces each batch as positions in that canonical order; each
   owner runs its head on exactly those samples and sends the activations; the server
   concatenates them, runs the top, computes the loss and sends **each head its own
   slice** of the gradient.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.data.datasets import load_index
from splitfed.data.partition import split_train_test
from splitfed.errors import ConfigError, DataError, ProtocolError
from splitfed.metrics import Tally
from splitfed.models.vertical import band_bounds, seeded_head, seeded_top
from splitfed.optim import make_optimizer
from splitfed.protocol import Assignment, ClientRole, DataRequest, ProtocolSpec, RoundResult, ServerRole
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.wire import Message

from . import psi
from .split_steps import from_wire, to_wire

MIN_COMMON = 10


def encode_ids(ids: list[str]) -> torch.Tensor:
    if any("\n" in i for i in ids):
        raise DataError("sample ids must not contain line breaks")
    return psi.to_tensor("\n".join(ids).encode("utf-8"))


def decode_ids(t: torch.Tensor) -> list[str]:
    text = psi.to_bytes(t).decode("utf-8")
    return text.split("\n") if text else []


def owner_ids(all_ids: list[str], overlap: float, seed: int, position: int) -> list[int]:
    """Rows a simulated owner holds: a seeded random share ``overlap`` of all samples."""
    if not 0 < overlap <= 1:
        raise ConfigError(f"--overlap must be in (0, 1], got {overlap}")
    rng = np.random.default_rng([seed, 7919, position])
    n = len(all_ids)
    return sorted(rng.choice(n, size=max(1, round(overlap * n)), replace=False).tolist())


class VerticalOwner(ClientRole):
    """A data owner: its band of its samples, its head, PSI server for its ids."""

    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        super().__init__(assignment, data, device, name)
        self.index = load_index(data.source)
        self.k, self.K = assignment.index, assignment.clients
        if data.shard == "all":  # a real owner: its whole dataset are its features
            self.rows = list(range(len(self.index)))
            self.cols = None
        else:  # simulation: a share of the samples, band k of each image
            self.rows = owner_ids(self.index.ids, float(self.config.option("overlap", 1.0)), self.config.seed, self.k)
            self.cols = band_bounds(self.index.shape[2], self.K)[self.k]
        self.my_ids = [self.index.ids[r] for r in self.rows]
        c, h, w = self.index.shape
        width = w if self.cols is None else self.cols[1] - self.cols[0]
        self.head = seeded_head(c, h, width, self.config.seed, self.k).to(device)
        cfg = self.config
        self.opt = make_optimizer(self.head.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def _load(self, ids: list[str]) -> torch.Tensor:
        where = {i: r for i, r in zip(self.my_ids, self.rows, strict=True)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise ProtocolError(f"the server announced id {missing[0]!r}, which {self.name} does not hold")
        x, _ = self.index.load([where[i] for i in ids])
        return x if self.cols is None else x[..., self.cols[0] : self.cols[1]].contiguous()

    def setup(self, link: ClientLink) -> None:
        ask = link.request(Message("ready", meta={"n_ids": len(self.my_ids), "position": self.k}), expect=("psi",))
        setup, response = psi.owner_answer(self.my_ids, psi.to_bytes(ask.tensors["request"]), int(ask.meta["n"]))
        reply = link.request(
            Message("psi", tensors={"setup": psi.to_tensor(setup), "response": psi.to_tensor(response)}),
            expect=("ids",),
        )
        self.train_x = self._load(decode_ids(reply.tensors["train"]))
        self.test_x = self._load(decode_ids(reply.tensors["test"]))
        del self.index  # everything else this owner had stays out of memory from here on

    def _phase(self, link: ClientLink, phase: str, x: torch.Tensor) -> None:
        rows = link.request(Message("pull", meta={"phase": phase}), expect=("ids",)).tensors["rows"]
        while len(rows):
            if phase == "train":
                acts = self.head(x[rows].to(self.device))
                reply = link.request(
                    Message("forward", tensors={"acts": to_wire(acts, self.config.wire_dtype)}), expect=("gradient",)
                )
                self.opt.zero_grad(set_to_none=True)
                acts.backward(from_wire(reply.tensors["grad"], self.device))
                self.opt.step()
            else:
                with torch.no_grad():
                    acts = to_wire(self.head(x[rows].to(self.device)), self.config.wire_dtype)
                reply = link.request(Message("eval", tensors={"acts": acts}), expect=("eval_result",))
            rows = reply.tensors["rows"]

    def train_round(self, link: ClientLink, round: int) -> None:
        self.head.train()
        self._phase(link, "train", self.train_x)

    def evaluate(self, link: ClientLink, round: int) -> None:
        self.head.eval()
        self._phase(link, "eval", self.test_x)
        self.head.train()
        link.send(Message("eval_done"))


def top_step(
    top: torch.nn.Module, opt: torch.optim.Optimizer, parts: list[torch.Tensor], labels: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    """Concatenate the heads' outputs, step the top; return each head **its own** gradient slice."""
    cut = torch.cat(parts, dim=1).detach().requires_grad_(True)
    logits = top(cut)
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    grads = list(cut.grad.split([p.shape[1] for p in parts], dim=1))
    return grads, logits.detach(), float(loss.detach()) * len(labels)


class VerticalServer(ServerRole):
    """The label holder: PSI client, top model, loss."""

    def setup(self, link: ServerLink) -> dict[str, Any]:
        cfg = self.config
        index = load_index(cfg.data)
        self.classes = index.classes
        train_rows, test_rows = split_train_test(
            index.labels, index.subjects, cfg.test_split, cfg.test_fraction, cfg.seed
        )
        label_of = {index.ids[r]: int(index.labels[r]) for r in range(len(index))}
        train_ids = {index.ids[r] for r in train_rows}
        ready: dict[str, dict] = {}
        while len(ready) < len(link.clients):
            peer, msg = link.recv(expect=("ready",))
            ready[peer] = msg.meta
        self.owners = list(link.clients)
        started = time.monotonic()
        holder = psi.LabelHolder(list(label_of))
        request = psi.to_tensor(holder.request)
        psi_bytes = 0
        for peer in self.owners:
            link.reply(peer, Message("psi", meta={"n": len(holder.ids)}, tensors={"request": request}))
            psi_bytes += len(holder.request)
        common = set(holder.ids)
        for _ in self.owners:
            peer, msg = link.recv(expect=("psi",))
            setup, response = psi.to_bytes(msg.tensors["setup"]), psi.to_bytes(msg.tensors["response"])
            psi_bytes += len(setup) + len(response)
            common &= holder.common_with(setup, response)
        ordered = psi.check_intersection(common, MIN_COMMON, len(self.owners))
        self.train_ids = [i for i in ordered if i in train_ids]
        self.test_ids = [i for i in ordered if i not in train_ids]
        if not self.train_ids:
            raise DataError("no common sample is in the training split; use a larger --overlap or a bigger dataset")
        self.psi = {
            "intersection_size": len(ordered),
            "psi_seconds": time.monotonic() - started,
            "psi_bytes": psi_bytes,
            "train_aligned": len(self.train_ids),
            "test_aligned": len(self.test_ids),
        }
        self.train_y = torch.tensor([label_of[i] for i in self.train_ids])
        self.test_y = torch.tensor([label_of[i] for i in self.test_ids])
        self.top = seeded_top(len(self.owners), len(self.classes), cfg.seed).to(self.device)
        self.opt = make_optimizer(self.top.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        ids = {"train": encode_ids(self.train_ids), "test": encode_ids(self.test_ids)}
        for peer in self.owners:
            link.reply(peer, Message("ids", tensors=ids))
        return {
            "classes": self.classes,
            "input_shape": list(index.shape),
            "psi": self.psi,
            "client_data": {p: {"n_ids": ready[p]["n_ids"]} for p in self.owners},
        }

    def _gather(self, link: ServerLink, kind: str) -> list[torch.Tensor]:
        acts: dict[str, torch.Tensor] = {}
        while len(acts) < len(self.owners):
            peer, msg = link.recv(expect=(kind,))
            acts[peer] = from_wire(msg.tensors["acts"], self.device)
        return [acts[p] for p in self.owners]  # band order

    def _phase(self, link: ServerLink, phase: str, batches: list[torch.Tensor], y: torch.Tensor) -> Tally:
        tally = Tally(len(self.classes))
        for _ in self.owners:
            link.recv(expect=("pull",))
        nothing = torch.zeros(0, dtype=torch.int64)
        for peer in self.owners:
            link.reply(peer, Message("ids", tensors={"rows": batches[0] if batches else nothing}))
        for b, rows in enumerate(batches):
            labels = y[rows].to(self.device)
            parts = self._gather(link, "forward" if phase == "train" else "eval")
            following = batches[b + 1] if b + 1 < len(batches) else nothing
            if phase == "train":
                grads, logits, loss_sum = top_step(self.top, self.opt, parts, labels)
                tally.add(logits, labels, loss_sum)
                for peer, grad in zip(self.owners, grads, strict=True):
                    link.reply(
                        peer,
                        Message("gradient", tensors={"grad": to_wire(grad, self.config.wire_dtype), "rows": following}),
                    )
            else:
                with torch.no_grad():
                    logits = self.top(torch.cat(parts, dim=1))
                tally.add(logits, labels, float(F.cross_entropy(logits, labels, reduction="sum")))
                for peer in self.owners:
                    link.reply(peer, Message("eval_result", tensors={"rows": following}))
        return tally

    def train_round(self, link: ServerLink, round: int) -> RoundResult:
        from splitfed.data.shards import batch_order

        cfg = self.config
        batches = [
            b
            for e in range(cfg.local_epochs)
            for b in batch_order(len(self.train_y), cfg.batch_size, seed=cfg.seed, client=0, round=round, epoch=e)
        ]
        return RoundResult(self._phase(link, "train", batches, self.train_y))

    def evaluate(self, link: ServerLink, round: int) -> RoundResult:
        batches = list(torch.arange(len(self.test_y)).split(256))
        tally = self._phase(link, "eval", batches, self.test_y)
        for _ in self.owners:
            link.recv(expect=("eval_done",))
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {"top": {k: v.detach().cpu().clone() for k, v in self.top.state_dict().items()}}

    def summary(self) -> dict[str, Any]:
        return dict(self.psi)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overlap",
        type=float,
        default=1.0,
        help="simulated share of all samples each owner holds (sampled independently per owner; the "
        "intersection is found by PSI) (default %(default)s)",
    )


SPEC = ProtocolSpec(
    name="pyvertical",
    summary="PyVertical: each client holds a vertical band of the same samples, aligned by PSI; labels on the server",
    server=VerticalServer,
    client=VerticalOwner,
    add_arguments=_add_arguments,
    options=lambda args: {"overlap": args.overlap},
)
