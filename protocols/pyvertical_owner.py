"""PyVertical's data owner: its band of its samples, its head, and (with --labels client) the labels.

See pyvertical.py for the protocol. An owner is a PSI server for the label holder; with
``--labels client`` owner 0 is the label holder itself: the PSI client of the others
(through the server's relay), the one that splits train/test, and the one that computes
the loss on the logits the server sends it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.data.band_augment import band_augment
from splitfed.data.datasets import load_index
from splitfed.data.partition import split_train_test
from splitfed.devices import autocast
from splitfed.errors import ConfigError, ProtocolError
from splitfed.metrics import Tally
from splitfed.models.vertical import band_bounds, seeded_head
from splitfed.optim import make_optimizer
from splitfed.peers import Server
from splitfed.protocol import Assignment, ClientRole, DataRequest
from splitfed.wire import Message

from . import psi
from .psi import MIN_COMMON, decode_ids, encode_ids
from .split_steps import from_wire, loss_with_counts, state_copy, to_wire


def owner_ids(all_ids: list[str], overlap: float, seed: int, position: int) -> list[int]:
    """Rows a simulated owner holds: a seeded random share ``overlap`` of all samples."""
    if not 0 < overlap <= 1:
        raise ConfigError(f"--overlap must be in (0, 1], got {overlap}")
    rng = np.random.default_rng([seed, 7919, position])
    n = len(all_ids)
    return sorted(rng.choice(n, size=max(1, round(overlap * n)), replace=False).tolist())


class VerticalOwner(ClientRole):
    """A data owner: its band of its samples, its head, PSI server for its ids."""

    state_required = True  # the head never leaves its owner: a resumed run needs the owner's own copy

    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        super().__init__(assignment, data, device, name)
        self.index = load_index(data.source)
        self.k, self.K = assignment.index, assignment.clients
        if data.shard == "all":  # a real owner: its whole dataset are its features
            self.rows = list(range(len(self.index)))
            self.cols = None
        else:  # simulation: a share of the samples, band k of each image
            self.rows = owner_ids(self.index.ids, float(self.config.option("overlap")), self.config.seed, self.k)
            self.cols = band_bounds(self.index.shape[2], self.K)[self.k]
        self.my_ids = [self.index.ids[r] for r in self.rows]
        self.holds_labels = self.config.option("labels") == "client" and self.k == 0
        c, h, w = self.index.shape
        width = w if self.cols is None else self.cols[1] - self.cols[0]
        left = 0 if self.cols is None else self.cols[0]
        self.augment = band_augment(
            self.config.augment, self.index.kind, (h, w, 0, left), columns=True, protocol="pyvertical"
        )
        self.aug_params: dict[str, torch.Tensor] | None = None
        self.head = seeded_head(c, h, width, self.config.seed, self.k, self.config.option("head")).to(device)
        cfg = self.config
        self.opt = make_optimizer(self.head.parameters(), cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)

    def _load(self, ids: list[str]) -> torch.Tensor:
        where = {i: r for i, r in zip(self.my_ids, self.rows, strict=True)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise ProtocolError(f"the server announced id {missing[0]!r}, which {self.name} does not hold")
        x, _ = self.index.load([where[i] for i in ids])
        return x if self.cols is None else x[..., self.cols[0] : self.cols[1]].contiguous()

    def describe(self) -> dict:
        meta = {"n_ids": len(self.my_ids), "position": self.k, "holds_labels": self.holds_labels}
        if self.holds_labels:
            meta["classes"] = self.classes = self.index.classes
        return meta

    def setup(self, server: Server, ack: Message) -> None:
        """PSI: answer the label holder's request (in the ack, or relayed by the server), or be the holder."""
        if self.holds_labels:
            reply = self._align_as_label_holder(server)
        else:
            ask = ack if "request" in ack.tensors else server.request(Message("psi"), "psi")
            setup, response = psi.owner_answer(self.my_ids, psi.to_bytes(ask.tensors["request"]), int(ask.meta["n"]))
            reply = server.request(
                Message("psi", tensors={"setup": psi.to_tensor(setup), "response": psi.to_tensor(response)}), "ids"
            )
        train_ids, test_ids = decode_ids(reply.tensors["train"]), decode_ids(reply.tensors["test"])
        self.train_x, self.test_x = self._load(train_ids), self._load(test_ids)
        if self.holds_labels:
            label_of = {self.index.ids[r]: int(self.index.labels[r]) for r in self.rows}
            self.train_y = torch.tensor([label_of[i] for i in train_ids])
            self.test_y = torch.tensor([label_of[i] for i in test_ids])
        del self.index  # everything else this owner had stays out of memory from here on

    def _align_as_label_holder(self, server: Server) -> Message:
        """PSI client for the other owners (through the server's relay); decide the split; share the ids."""
        holder = psi.LabelHolder(self.my_ids)
        answers = server.request(
            Message("psi", meta={"n": len(holder.ids)}, tensors={"request": psi.to_tensor(holder.request)}),
            "psi",
        )
        common = set(holder.ids)
        for k in range(1, self.K):
            setup, response = (psi.to_bytes(answers.tensors[f"{key}-{k}"]) for key in ("setup", "response"))
            common &= holder.common_with(setup, response)
        ordered = psi.check_intersection(common, MIN_COMMON, self.K - 1)
        row_of = {i: r for i, r in zip(self.my_ids, self.rows, strict=True)}
        rows = [row_of[i] for i in ordered]
        subjects = [self.index.subjects[r] for r in rows] if self.index.subjects else None
        train, _ = split_train_test(
            self.index.labels[rows], subjects, self.data.test_split, self.data.test_fraction, self.config.seed
        )
        train_set = {ordered[i] for i in train}
        train_ids = [i for i in ordered if i in train_set]
        test_ids = [i for i in ordered if i not in train_set]
        ids = {"train": encode_ids(train_ids), "test": encode_ids(test_ids)}
        return server.request(Message("ids", tensors=ids), "ids")

    def _loss_here(self, server: Server, reply: Message, rows: torch.Tensor, train: bool) -> Message:
        """Label holder: the server sent logits; return d(loss)/d(logits) (train), or keep the tally (eval)."""
        y = (self.train_y if train else self.test_y)[rows]
        logits = reply.tensors["logits"].float().requires_grad_(train)
        if not train:  # the test tally leaves only once, with eval_done: no per-batch label mix
            self.eval_tally.add(logits, y, float(F.cross_entropy(logits, y, reduction="sum")))
            return server.request(Message("gradient"), "eval_result")
        loss, meta = loss_with_counts(logits, y, self.config.label_smoothing)
        loss.backward()
        return server.request(Message("gradient", meta=meta, tensors={"grad": logits.grad}), "gradient")

    def _phase(self, server: Server, phase: str, x: torch.Tensor) -> None:
        rows = server.request(Message("pull", meta={"phase": phase}), "ids").tensors["rows"]
        while len(rows):
            if phase == "train":
                batch = x[rows] if self.aug_params is None else self.augment(x[rows], self.aug_params, rows)
                with autocast(self.device, self.config.precision):
                    acts = self.head(batch.to(self.device))
                msg = Message("forward", tensors={"acts": to_wire(acts, self.config.wire_dtype)})
                if self.holds_labels:
                    reply = self._loss_here(server, server.request(msg, "logits"), rows, train=True)
                else:
                    reply = server.request(msg, "gradient")
                self.opt.zero_grad(set_to_none=True)
                acts.backward(from_wire(reply.tensors["grad"], self.device, acts.dtype))
                self.opt.step()
            else:
                with torch.inference_mode(), autocast(self.device, self.config.precision):
                    acts = to_wire(self.head(x[rows].to(self.device)), self.config.wire_dtype)
                if self.holds_labels:
                    logits = server.request(Message("eval", tensors={"acts": acts}), "logits")
                    reply = self._loss_here(server, logits, rows, train=False)
                else:
                    reply = server.request(Message("eval", tensors={"acts": acts}), "eval_result")
            rows = reply.tensors["rows"]

    def state_dict(self) -> dict:
        return {"head": state_copy(self.head), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])

    def train_round(self, server: Server, round: int) -> None:
        self.head.train()
        if self.augment is not None:  # every owner draws the same parameters for the same aligned row
            self.aug_params = self.augment.params(
                len(self.train_x), seed=self.config.seed, group=0, round=round, epoch=0
            )
        self._phase(server, "train", self.train_x)

    def evaluate(self, server: Server, round: int) -> dict:
        self.eval_tally = Tally(len(self.classes)) if self.holds_labels else None
        self.head.eval()
        self._phase(server, "eval", self.test_x)
        self.head.train()
        return self.eval_tally.to_meta() if self.eval_tally is not None else {}
