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

import time
from typing import Any

import torch
import torch.nn.functional as F

from splitfed.config import RunConfig
from splitfed.data.datasets import load_index
from splitfed.data.partition import split_train_test
from splitfed.devices import autocast
from splitfed.errors import ConfigError, DataError, ProtocolError
from splitfed.metrics import Tally
from splitfed.models.vertical import band_bounds, seeded_top
from splitfed.optim import make_optimizer
from splitfed.peers import Clients
from splitfed.protocol import RoundResult, ServerRole
from splitfed.wire import Message

from . import psi
from .declarations import PYVERTICAL
from .psi import MIN_COMMON, decode_ids, encode_ids
from .pyvertical_owner import VerticalOwner
from .split_steps import from_wire, to_wire


def top_step(
    top: torch.nn.Module,
    opt: torch.optim.Optimizer,
    parts: list[torch.Tensor],
    labels: torch.Tensor,
    smoothing: float = 0.0,
    precision: str = "32",
) -> tuple[list[torch.Tensor], torch.Tensor, float]:
    """Concatenate the heads' outputs, step the top (under ``--precision``'s autocast); return each head
    **its own** gradient slice."""
    cut = torch.cat(parts, dim=1).detach().requires_grad_(True)
    with autocast(cut.device, precision):
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

    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        self.owners, self.ready = list(ready), ready
        holders = [p for p in self.owners if ready[p].get("holds_labels")]
        self.label_peer = holders[0] if holders else None
        self.started = time.monotonic()
        if self.label_peer is None:
            self._load_labels()
        else:
            self.classes = list(ready[self.label_peer]["classes"])
        return {"client_data": {p: {"n_ids": ready[p]["n_ids"]} for p in self.owners}}

    def start(self, peer: str) -> Message | None:
        """With the labels here, every owner's ack carries our PSI request."""
        if self.label_peer is not None:
            return None
        return Message("ack", meta={"n": len(self.holder.ids)}, tensors={"request": psi.to_tensor(self.holder.request)})

    def prepare(self, clients: Clients) -> dict[str, Any]:
        """Align the owners' samples by PSI, then tell every owner the common ids in canonical order."""
        cfg = self.config
        if self.label_peer is None:
            ids, psi_bytes = self._align_here(clients)
        else:
            ids, psi_bytes = self._relay_alignment(clients)
        n_train, n_test = len(decode_ids(ids["train"])), len(decode_ids(ids["test"]))
        if not n_train:
            raise DataError("no common sample is in the training split; use a larger --overlap or a bigger dataset")
        self.n = {"train": n_train, "eval": n_test}
        self.psi = {
            "intersection_size": n_train + n_test,
            "psi_seconds": time.monotonic() - self.started,
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
        clients.reply_all(Message("ids", tensors=ids))
        return {"classes": self.classes, "input_shape": self.shape, "psi": self.psi}

    def _load_labels(self) -> None:
        """The server holds the labels: its ids, labels and split; it is the PSI client of every owner."""
        cfg = self.config
        index = load_index(cfg.data)
        self.classes, self.shape = index.classes, list(index.shape)
        train_rows, _ = split_train_test(index.labels, index.subjects, cfg.test_split, cfg.test_fraction, cfg.seed)
        self.label_of = {index.ids[r]: int(index.labels[r]) for r in range(len(index))}
        self.train_set = {index.ids[r] for r in train_rows}
        self.holder = psi.LabelHolder(list(self.label_of))

    def _align_here(self, clients: Clients) -> tuple[dict[str, torch.Tensor], int]:
        """Every owner answers the request its ack carried; the server intersects and splits train/test."""
        holder = self.holder
        psi_bytes, common = len(holder.request) * len(self.owners), set(holder.ids)
        for msg in clients.gather("psi").values():
            setup, response = psi.to_bytes(msg.tensors["setup"]), psi.to_bytes(msg.tensors["response"])
            psi_bytes += len(setup) + len(response)
            common &= holder.common_with(setup, response)
        ordered = psi.check_intersection(common, MIN_COMMON, len(self.owners))
        train_ids = [i for i in ordered if i in self.train_set]
        test_ids = [i for i in ordered if i not in self.train_set]
        self.y = {
            "train": torch.tensor([self.label_of[i] for i in train_ids]),
            "eval": torch.tensor([self.label_of[i] for i in test_ids]),
        }
        return {"train": encode_ids(train_ids), "test": encode_ids(test_ids)}, psi_bytes

    def _relay_alignment(self, clients: Clients) -> tuple[dict[str, torch.Tensor], int]:
        """Client 0 holds the labels: relay its PSI request to the other owners and their answers back."""
        holder, others = self.label_peer, [p for p in self.owners if p != self.label_peer]
        ask = clients.gather("psi")[holder]  # the holder's request; the others ask for it
        clients.reply_all(Message("psi", meta=ask.meta, tensors=ask.tensors), among=others)
        answers, psi_bytes = {}, len(psi.to_bytes(ask.tensors["request"])) * len(others)
        for peer, msg in clients.gather("psi", among=others).items():
            k = int(self.ready[peer]["position"])
            answers.update({f"setup-{k}": msg.tensors["setup"], f"response-{k}": msg.tensors["response"]})
            psi_bytes += sum(t.numel() for t in msg.tensors.values())
        clients.reply(holder, Message("psi", tensors=answers))
        peer, ids = clients.recv("ids")
        if peer != holder:
            raise ProtocolError(f"{peer} sent the common ids, which only the label holder {holder} decides")
        self.y, self.shape = None, None  # the labels stay with their owner
        return {"train": ids.tensors["train"], "test": ids.tensors["test"]}, psi_bytes

    def _phase(self, clients: Clients, phase: str, batches: list[torch.Tensor]) -> Tally:
        tally = Tally(len(self.classes))
        clients.gather("pull")
        nothing = torch.zeros(0, dtype=torch.int64)
        clients.reply_all(Message("ids", tensors={"rows": batches[0] if batches else nothing}))
        train = phase == "train"
        for b, rows in enumerate(batches):
            sent = clients.gather("forward" if train else "eval")
            parts = [from_wire(msg.tensors["acts"], self.device) for msg in sent.values()]  # band order
            following = batches[b + 1] if b + 1 < len(batches) else nothing
            if self.label_peer is not None:
                grads = self._loss_remote(clients, parts, tally, train)
            elif train:
                labels = self.y["train"][rows].to(self.device)
                cfg = self.config
                grads, logits, loss_sum = top_step(
                    self.top, self.opt, parts, labels, cfg.label_smoothing, cfg.precision
                )
                tally.add(logits, labels, loss_sum)
            else:
                labels = self.y["eval"][rows].to(self.device)
                with torch.inference_mode(), autocast(self.device, self.config.precision):
                    logits = self.top(torch.cat(parts, dim=1)).float()
                tally.add(logits, labels, float(F.cross_entropy(logits, labels, reduction="sum")))
            if train:
                band = dict(zip(self.owners, grads, strict=True))  # each head its own slice
                clients.reply_all(
                    lambda peer, band=band, rows=following: Message(
                        "gradient", tensors={"grad": to_wire(band[peer], self.config.wire_dtype), "rows": rows}
                    )
                )
            else:
                clients.reply_all(Message("eval_result", tensors={"rows": following}))
        return tally

    def _loss_remote(self, clients: Clients, parts: list[torch.Tensor], tally: Tally, train: bool) -> list | None:
        """The label holder computes the loss on our logits; we finish backward through the top."""
        cut = torch.cat(parts, dim=1).detach().requires_grad_(train)
        with torch.set_grad_enabled(train), autocast(self.device, self.config.precision):
            logits = self.top(cut)
        clients.reply(self.label_peer, Message("logits", tensors={"logits": logits.detach().float().cpu()}))
        _, reply = clients.recv("gradient")
        if not train:
            return None  # the label holder reports its test tally with eval_done
        tally.add_meta(reply.meta)
        self.opt.zero_grad(set_to_none=True)
        logits.backward(reply.tensors["grad"].to(self.device, logits.dtype))
        self.opt.step()
        return list(cut.grad.split([p.shape[1] for p in parts], dim=1))

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        from splitfed.data.shards import batch_order

        cfg = self.config
        batches = [
            b
            for e in range(cfg.local_epochs)
            for b in batch_order(self.n["train"], cfg.batch_size, seed=cfg.seed, client=0, round=round, epoch=e)
        ]
        return RoundResult(self._phase(clients, "train", batches))

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        batches = list(torch.arange(self.n["eval"]).split(256))
        tally = self._phase(clients, "eval", batches)
        reports = clients.gather("eval_done")
        if self.label_peer is not None:  # the label holder's test tally
            tally.add_meta(reports[self.label_peer].meta)
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "top": {k: v.detach().cpu().clone() for k, v in self.top.state_dict().items()},
            "optimizer": self.opt.state_dict(),
        }

    def summary(self) -> dict[str, Any]:
        return dict(self.psi)


def _validate(config: RunConfig, index: Any) -> None:
    """Labels on a client need another owner, and (with data) each owner gets a band at least one pixel wide."""
    if config.option("labels") == "client" and config.clients < 2:
        raise ConfigError("--labels client needs at least 2 clients: the label holder and another data owner")
    if index is not None:
        band_bounds(index.shape[2], config.clients)
        split_train_test(index.labels, index.subjects, config.test_split, config.test_fraction, config.seed)


SPEC = PYVERTICAL.with_roles(
    server=VerticalServer,
    client=VerticalOwner,
    messages=frozenset({"psi", "ids", "pull", "forward", "gradient", "logits", "eval", "eval_result"}),
    validate=_validate,
)
