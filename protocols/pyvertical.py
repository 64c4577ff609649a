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

import torch
import torch.nn.functional as F

from splitfed.config import RunConfig
from splitfed.data.datasets import load_index
from splitfed.data.partition import split_train_test
from splitfed.errors import ConfigError, DataError
from splitfed.metrics import Tally
from splitfed.models.vertical import band_bounds, seeded_top
from splitfed.optim import make_optimizer
from splitfed.protocol import ProtocolSpec, RoundResult, ServerRole
from splitfed.transport.link import ServerLink
from splitfed.wire import Message

from . import psi
from .psi import MIN_COMMON, decode_ids, encode_ids
from .pyvertical_owner import VerticalOwner
from .split_steps import from_wire, to_wire


def top_step(
    top: torch.nn.Module,
    opt: torch.optim.Optimizer,
    parts: list[torch.Tensor],
    labels: torch.Tensor,
    smoothing: float = 0.0,
) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    """Concatenate the heads' outputs, step the top; return each head **its own** gradient slice."""
    cut = torch.cat(parts, dim=1).detach().requires_grad_(True)
    logits = top(cut)
    loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    grads = list(cut.grad.split([p.shape[1] for p in parts], dim=1))
    return grads, logits.detach(), float(loss.detach()) * len(labels)


class VerticalServer(ServerRole):
    """The top model; with the labels (default) also the PSI client and the loss."""

    #: PSI figures for summary.json, replaced (never changed in place) once the alignment is done
    psi: dict[str, Any] = {}

    def setup(self, link: ServerLink) -> dict[str, Any]:
        cfg = self.config
        ready: dict[str, dict] = {}
        while len(ready) < len(link.clients):
            peer, msg = link.recv(expect=("ready",))
            ready[peer] = msg.meta
        self.owners = list(link.clients)
        holders = [p for p in self.owners if ready[p].get("holds_labels")]
        self.label_peer = holders[0] if holders else None
        started = time.monotonic()
        if self.label_peer is None:
            ids, psi_bytes, shape = self._align_here(link)
        else:
            ids, psi_bytes = self._relay_alignment(link, ready)
            self.classes, shape = list(ready[self.label_peer]["classes"]), None
        n_train, n_test = len(decode_ids(ids["train"])), len(decode_ids(ids["test"]))
        if not n_train:
            raise DataError("no common sample is in the training split; use a larger --overlap or a bigger dataset")
        self.n = {"train": n_train, "eval": n_test}
        self.psi = {
            "intersection_size": n_train + n_test,
            "psi_seconds": time.monotonic() - started,
            "psi_bytes": psi_bytes,
            "train_aligned": n_train,
            "test_aligned": n_test,
            "labels_with": self.label_peer or "server",
        }
        self.top = seeded_top(len(self.owners), len(self.classes), cfg.seed).to(self.device)
        self.opt = make_optimizer(self.top.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        if self.resume is not None:  # the heads come back from their owners' own state files
            self.top.load_state_dict(self.resume["top"])
            self.opt.load_state_dict(self.resume["optimizer"])
        for peer in self.owners:
            link.reply(peer, Message("ids", tensors=ids))
        return {
            "classes": self.classes,
            "input_shape": shape,
            "psi": self.psi,
            "client_data": {p: {"n_ids": ready[p]["n_ids"]} for p in self.owners},
        }

    def _align_here(self, link: ServerLink) -> tuple[dict[str, torch.Tensor], int, list[int]]:
        """The server holds the labels: it is the PSI client of every owner and splits train/test."""
        cfg = self.config
        index = load_index(cfg.data)
        self.classes = index.classes
        train_rows, _ = split_train_test(index.labels, index.subjects, cfg.test_split, cfg.test_fraction, cfg.seed)
        label_of = {index.ids[r]: int(index.labels[r]) for r in range(len(index))}
        train_set = {index.ids[r] for r in train_rows}
        holder = psi.LabelHolder(list(label_of))
        request = psi.to_tensor(holder.request)
        for peer in self.owners:
            link.reply(peer, Message("psi", meta={"n": len(holder.ids)}, tensors={"request": request}))
        psi_bytes, common = len(holder.request) * len(self.owners), set(holder.ids)
        for _ in self.owners:
            _, msg = link.recv(expect=("psi",))
            setup, response = psi.to_bytes(msg.tensors["setup"]), psi.to_bytes(msg.tensors["response"])
            psi_bytes += len(setup) + len(response)
            common &= holder.common_with(setup, response)
        ordered = psi.check_intersection(common, MIN_COMMON, len(self.owners))
        train_ids = [i for i in ordered if i in train_set]
        test_ids = [i for i in ordered if i not in train_set]
        self.y = {
            "train": torch.tensor([label_of[i] for i in train_ids]),
            "eval": torch.tensor([label_of[i] for i in test_ids]),
        }
        return {"train": encode_ids(train_ids), "test": encode_ids(test_ids)}, psi_bytes, list(index.shape)

    def _relay_alignment(self, link: ServerLink, ready: dict[str, dict]) -> tuple[dict[str, torch.Tensor], int]:
        """Client 0 holds the labels: relay its PSI request to the other owners and their answers back."""
        holder, others = self.label_peer, [p for p in self.owners if p != self.label_peer]
        link.reply(holder, Message("psi", meta={"role": "label holder"}))
        _, ask = link.recv(expect=("psi",))
        for peer in others:
            link.reply(peer, Message("psi", meta=ask.meta, tensors=ask.tensors))
        answers, psi_bytes = {}, len(psi.to_bytes(ask.tensors["request"])) * len(others)
        for _ in others:
            peer, msg = link.recv(expect=("psi",))
            k = int(ready[peer]["position"])
            answers.update({f"setup-{k}": msg.tensors["setup"], f"response-{k}": msg.tensors["response"]})
            psi_bytes += sum(t.numel() for t in msg.tensors.values())
        link.reply(holder, Message("psi", tensors=answers))
        _, ids = link.recv(expect=("ids",))
        self.y = None  # the labels stay with their owner
        return {"train": ids.tensors["train"], "test": ids.tensors["test"]}, psi_bytes

    def _gather(self, link: ServerLink, kind: str) -> list[torch.Tensor]:
        acts: dict[str, torch.Tensor] = {}
        while len(acts) < len(self.owners):
            peer, msg = link.recv(expect=(kind,))
            acts[peer] = from_wire(msg.tensors["acts"], self.device)
        return [acts[p] for p in self.owners]  # band order

    def _phase(self, link: ServerLink, phase: str, batches: list[torch.Tensor]) -> Tally:
        tally = Tally(len(self.classes))
        for _ in self.owners:
            link.recv(expect=("pull",))
        nothing = torch.zeros(0, dtype=torch.int64)
        for peer in self.owners:
            link.reply(peer, Message("ids", tensors={"rows": batches[0] if batches else nothing}))
        train = phase == "train"
        for b, rows in enumerate(batches):
            parts = self._gather(link, "forward" if train else "eval")
            following = batches[b + 1] if b + 1 < len(batches) else nothing
            if self.label_peer is not None:
                grads = self._loss_remote(link, parts, tally, train)
            elif train:
                labels = self.y["train"][rows].to(self.device)
                grads, logits, loss_sum = top_step(self.top, self.opt, parts, labels, self.config.label_smoothing)
                tally.add(logits, labels, loss_sum)
            else:
                labels = self.y["eval"][rows].to(self.device)
                with torch.no_grad():
                    logits = self.top(torch.cat(parts, dim=1))
                tally.add(logits, labels, float(F.cross_entropy(logits, labels, reduction="sum")))
            for i, peer in enumerate(self.owners):
                if train:
                    grad = to_wire(grads[i], self.config.wire_dtype)
                    link.reply(peer, Message("gradient", tensors={"grad": grad, "rows": following}))
                else:
                    link.reply(peer, Message("eval_result", tensors={"rows": following}))
        return tally

    def _loss_remote(self, link: ServerLink, parts: list[torch.Tensor], tally: Tally, train: bool) -> list | None:
        """The label holder computes the loss on our logits; we finish backward through the top."""
        cut = torch.cat(parts, dim=1).detach().requires_grad_(train)
        with torch.set_grad_enabled(train):
            logits = self.top(cut)
        link.reply(self.label_peer, Message("logits", tensors={"logits": logits.detach().cpu()}))
        _, reply = link.recv(expect=("gradient",))
        if not train:
            return None  # the label holder reports its test tally with eval_done
        tally.add_meta(reply.meta)
        self.opt.zero_grad(set_to_none=True)
        logits.backward(reply.tensors["grad"].to(self.device))
        self.opt.step()
        return list(cut.grad.split([p.shape[1] for p in parts], dim=1))

    def train_round(self, link: ServerLink, round: int) -> RoundResult:
        from splitfed.data.shards import batch_order

        cfg = self.config
        batches = [
            b
            for e in range(cfg.local_epochs)
            for b in batch_order(self.n["train"], cfg.batch_size, seed=cfg.seed, client=0, round=round, epoch=e)
        ]
        return RoundResult(self._phase(link, "train", batches))

    def evaluate(self, link: ServerLink, round: int) -> RoundResult:
        batches = list(torch.arange(self.n["eval"]).split(256))
        tally = self._phase(link, "eval", batches)
        for _ in self.owners:
            peer, msg = link.recv(expect=("eval_done",))
            if peer == self.label_peer:
                tally.add_meta(msg.meta)
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "top": {k: v.detach().cpu().clone() for k, v in self.top.state_dict().items()},
            "optimizer": self.opt.state_dict(),
        }

    def summary(self) -> dict[str, Any]:
        return dict(self.psi)


def _validate(config: RunConfig, index: Any) -> None:
    """The overlap is a share, and (with data) each owner gets a band at least one pixel wide."""
    overlap = float(config.option("overlap", 1.0))
    if not 0 < overlap <= 1:
        raise ConfigError(f"--overlap must be in (0, 1], got {overlap}")
    if config.option("labels", "server") not in ("server", "client"):
        raise ConfigError(f"--labels {config.option('labels')!r} is not one of server, client")
    if config.option("labels", "server") == "client" and config.clients < 2:
        raise ConfigError("--labels client needs at least 2 clients: the label holder and another data owner")
    if index is not None:
        band_bounds(index.shape[2], config.clients)
        split_train_test(index.labels, index.subjects, config.test_split, config.test_fraction, config.seed)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels",
        choices=("server", "client"),
        default="server",
        help="who holds the labels: the server (default, OpenMined's 'data scientist') or client 1, "
        "which then runs PSI with the other owners through the server and computes the loss on "
        "the logits the server sends it, so labels never leave it",
    )
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
    options=lambda args: {"overlap": args.overlap, "labels": args.labels},
    validate=_validate,
    augments=False,
    uses_model=False,
)
