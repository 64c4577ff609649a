"""FedSL (Abedi & Khan): recurrent networks split along the sequence across clients.

Every sample is a sequence (the rows of an image, or its columns) cut into K
consecutive segments. Clients form groups of K; in a group, party k holds segment k of
the group's samples and its own recurrent sub-network. Per batch, party k starts from
the hidden state handed over by party k-1 (zeros for k = 0) and hands its final state
on (h, and c for an LSTM); on the way back the gradient of each handed-over state goes
the same way. At round end the sub-networks are averaged **per segment position**
across groups (FedAvg, weighted by the group's samples).

Who holds what: the **last party of each group holds the classifier and the labels**,
so labels never leave their owner. The server relays hidden states and gradients
between the parties of a group (they talk only to the server), aggregates, and
receives only loss sums, correct counts and, at test time, a confusion matrix.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.aggregation import fedavg
from splitfed.checks import check_partition
from splitfed.config import RunConfig
from splitfed.data.band_augment import band_augment
from splitfed.data.datasets import load_index
from splitfed.data.shards import batch_order, client_rows
from splitfed.devices import autocast
from splitfed.errors import ConfigError, ProtocolError
from splitfed.metrics import Tally
from splitfed.models.rnn import build_segments, from_sequence, segment_bounds, to_sequence
from splitfed.optim import make_optimizer
from splitfed.peers import Clients, Server
from splitfed.protocol import Assignment, ClientRole, DataRequest, RoundResult, ServerRole
from splitfed.wire import Message

from .declarations import FEDSL
from .split_steps import from_wire, loss_with_counts, state_copy, to_wire

STATE_NAMES = ("h", "c")


def layout(clients: int, segments: int) -> int:
    """Number of groups; refuses a client count that does not fill whole groups."""
    if segments < 2:
        raise ConfigError("--segments must be at least 2 (one segment per party of a group)")
    if clients % segments:
        raise ConfigError(
            f"--clients {clients} is not a multiple of --segments {segments}: each group needs "
            f"exactly {segments} clients, one per segment"
        )
    return clients // segments


def average_by_position(
    entries: list[tuple[int, dict[str, torch.Tensor], float]],
) -> dict[int, dict[str, torch.Tensor]]:
    """FedAvg within each segment position; states of different positions never mix."""
    by_pos: dict[int, list[tuple[dict[str, torch.Tensor], float]]] = defaultdict(list)
    for position, state, n in entries:
        by_pos[position].append((state, n))
    return {p: fedavg([s for s, _ in items], [n for _, n in items]) for p, items in sorted(by_pos.items())}


class FedSLClient(ClientRole):
    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        super().__init__(assignment, data, device, name)
        cfg, K = self.config, int(self.config.option("segments"))
        self.groups = layout(assignment.clients, K)
        self.group, self.position, self.K = assignment.index // K, assignment.index % K, K
        index = load_index(data.source)
        whole = data.shard == "all"
        train_rows, test_rows = client_rows(
            index,
            1 if whole else self.groups,
            0 if whole else self.group,
            data.partition,
            data.test_split,
            data.test_fraction,
            data.seed,
        )
        order = cfg.option("sequence")
        seq_len = to_sequence(torch.zeros(1, *index.shape), order).shape[1]
        start, stop = segment_bounds(seq_len, K)[self.position]
        # Keep only this party's segment of every sequence; the rest is dropped at once.
        self.train_x, self.train_y = self._segment(index, train_rows, order, start, stop)
        self.test_x, self.test_y = self._segment(index, test_rows, order, start, stop)
        self.classes, self.shape, self.order = index.classes, index.shape, order
        c, h, w = index.shape
        region = (h, w, start, 0) if order == "rows" else (h, w, 0, start)
        self.augment = band_augment(cfg.augment, index.kind, region, columns=order == "cols", protocol="fedsl")
        features = self.train_x.shape[2]
        subnets, head = build_segments(
            cfg.option("cell"),
            features,
            int(cfg.option("hidden")),
            len(self.classes),
            K,
            cfg.seed,
            encoder=cfg.option("encoder"),
            channels=c,
        )
        self.net = subnets[self.position].to(device)
        self.head = head.to(device) if self.is_last else None
        params = list(self.net.parameters()) + (list(self.head.parameters()) if self.head is not None else [])
        self.opt = make_optimizer(params, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay)
        self.step_no = 0

    @staticmethod
    def _segment(index: Any, rows: np.ndarray, order: str, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = index.load(rows)
        return to_sequence(x, order)[:, start:stop].contiguous(), y

    @property
    def is_last(self) -> bool:
        return self.position == self.K - 1

    def describe(self) -> dict[str, Any]:
        return {
            "n_train": len(self.train_y),
            "n_test": len(self.test_y),
            "classes": self.classes,
            "shape": list(self.shape),
            "group": self.group,
            "position": self.position,
        }

    def setup(self, server: Server, ack: Message) -> None:
        if ack.tensors:  # a resumed run: this position's checkpointed sub-network
            self.load_position_state(ack.tensors)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])

    def _state_in(self, server: Server, phase: str, batch: int) -> tuple[torch.Tensor, ...]:
        if self.position == 0:
            return self.net.zero_state(batch, self.device)
        reply = server.request(Message("pull", meta={"phase": phase}, step=self.step_no), "hidden")
        return tuple(from_wire(reply.tensors[n], self.device) for n in STATE_NAMES if n in reply.tensors)

    def _hand_on(self, state: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {n: to_wire(t, self.config.wire_dtype) for n, t in zip(STATE_NAMES, state, strict=False)}

    def train_round(self, server: Server, round: int) -> None:
        cfg = self.config
        self.net.train()
        for epoch in range(cfg.local_epochs):
            params = None
            if self.augment is not None:  # the group's parties draw the same parameters for the same row
                params = self.augment.params(
                    len(self.train_y), seed=cfg.seed, group=self.group, round=round, epoch=epoch
                )
            for rows in batch_order(
                len(self.train_y), cfg.batch_size, seed=cfg.seed, client=self.group, round=round, epoch=epoch
            ):
                self.train_batch(server, rows, params)
        entries = state_copy(self.net)
        if self.head is not None:
            entries.update({f"head.{k}": v for k, v in state_copy(self.head).items()})
        reply = server.request(
            Message("weights", meta={"n": len(self.train_y), "position": self.position}, tensors=entries),
            "weights",
        )
        self.load_position_state(reply.tensors)

    def load_position_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """This position's averaged sub-network (and, for the last party, the classifier as head.*)."""
        self.net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("head.")})
        if self.head is not None:
            self.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})

    def train_batch(self, server: Server, rows: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> None:
        self.step_no += 1
        x = self.train_x[rows]
        if params is not None:  # augment the segment as the band of the image it is, then back to steps
            band = self.augment(from_sequence(x, self.order, self.shape[0]), params, rows)
            x = to_sequence(band, self.order)
        x = x.to(self.device)
        state_in = tuple(t.requires_grad_(self.position > 0) for t in self._state_in(server, "train", len(rows)))
        meta: dict[str, Any] = {}
        with autocast(self.device, self.config.precision):
            state_out = self.net(x, state_in)
            if self.is_last:
                y = self.train_y[rows].to(self.device)
                loss, meta = loss_with_counts(self.head(state_out[0][-1]), y, self.config.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        if self.is_last:
            loss.backward()
        else:
            reply = server.request(
                Message("hidden", meta={"phase": "train"}, tensors=self._hand_on(state_out), step=self.step_no),
                "gradient",
            )
            grads = [
                from_wire(reply.tensors[n], self.device, t.dtype) for n, t in zip(STATE_NAMES, state_out, strict=False)
            ]
            torch.autograd.backward(state_out, grads)
        if self.position > 0:
            back = {n: to_wire(t.grad, self.config.wire_dtype) for n, t in zip(STATE_NAMES, state_in, strict=False)}
            server.request(Message("gradient", meta=meta, tensors=back, step=self.step_no), "ack")
        self.opt.step()

    @torch.inference_mode()
    def evaluate(self, server: Server, round: int) -> dict[str, Any]:
        with autocast(self.device, self.config.precision):
            return self._evaluate(server)

    def _evaluate(self, server: Server) -> dict[str, Any]:
        self.net.eval()
        tally = Tally(len(self.classes))
        for start in range(0, len(self.test_y), 256):
            self.step_no += 1
            x = self.test_x[start : start + 256].to(self.device)
            state = self.net(x, self._state_in(server, "eval", len(x)))
            if self.is_last:
                y = self.test_y[start : start + 256].to(self.device)
                logits = self.head(state[0][-1]).float()
                tally.add(logits, y, float(F.cross_entropy(logits, y, reduction="sum")))
            else:
                server.request(
                    Message("hidden", meta={"phase": "eval"}, tensors=self._hand_on(state), step=self.step_no),
                    "ack",
                )
        self.net.train()
        return tally.to_meta() if self.is_last else {}


class FedSLServer(ServerRole):
    """Relays states and gradients within each group; averages sub-networks per position."""

    def setup(self, clients: Clients, ready: dict[str, dict]) -> dict[str, Any]:
        K = int(self.config.option("segments"))
        layout(len(clients), K)
        self.clients = list(ready)
        self.where = {p: (int(m["group"]), int(m["position"])) for p, m in ready.items()}
        if len(set(self.where.values())) != len(self.clients):
            raise ProtocolError(f"two clients claim the same group and segment: {self.where}")
        self.classes = list(ready[self.clients[0]]["classes"])
        self.n_train = {p: int(m["n_train"]) for p, m in ready.items()}
        self.averages: dict[int, dict[str, torch.Tensor]] = dict(self.resume["segments"]) if self.resume else {}
        return {
            "client_data": {
                p: {k: ready[p][k] for k in ("n_train", "n_test", "group", "position")} for p in self.clients
            },
            "classes": self.classes,
            "input_shape": ready[self.clients[0]]["shape"],
            "groups": len(self.clients) // K,
        }

    def start(self, peer: str) -> Message | None:
        """A resumed run: each party starts from its position's checkpointed sub-network."""
        return Message("ack", tensors=self.averages.get(self.where[peer][1], {}))

    def _relay(self, clients: Clients, phase: str) -> tuple[Tally, dict[str, Message]]:
        """Pass states forward and gradients back until every client sent its closing message."""
        closing = "weights" if phase == "train" else "eval_done"
        tally = Tally(len(self.classes))
        inbox: dict[tuple, dict[str, torch.Tensor]] = {}  # (group, position, step) -> state for that party
        pulls: dict[tuple, str] = {}  # (group, position, step) -> party waiting for its input state
        owed_grad: dict[tuple, str] = {}  # (group, position, step) -> party waiting for a gradient
        peer_at = {v: p for p, v in self.where.items()}

        def pull(peer: str, msg: Message) -> None:
            g, k = self.where[peer]
            key = (g, k, msg.step)
            if key in inbox:
                clients.reply(peer, Message("hidden", tensors=inbox.pop(key)))
            else:
                pulls[key] = peer

        def hidden(peer: str, msg: Message) -> None:
            g, k = self.where[peer]
            key = (g, k + 1, msg.step)
            if (g, k + 1) not in peer_at:
                raise ProtocolError(f"{peer} is the last of its group and cannot hand a state on")
            if key in pulls:
                clients.reply(pulls.pop(key), Message("hidden", tensors=msg.tensors))
            else:
                inbox[key] = msg.tensors
            if phase == "train":
                owed_grad[(g, k, msg.step)] = peer
            else:
                clients.reply(peer, Message("ack"))

        def gradient(peer: str, msg: Message) -> None:  # of the state party k received, owed to party k-1
            g, k = self.where[peer]
            target = owed_grad.pop((g, k - 1, msg.step), None)
            if target is None:
                raise ProtocolError(f"{peer} sent a gradient for step {msg.step} that nobody waits for")
            clients.reply(target, Message("gradient", tensors=msg.tensors))
            clients.reply(peer, Message("ack"))
            if "count" in msg.meta:
                tally.add_counts(msg.meta["loss_sum"], msg.meta["correct"], msg.meta["count"])

        done = clients.gather(closing, on={"pull": pull, "hidden": hidden, "gradient": gradient})
        return tally, done

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        tally, weights = self._relay(clients, "train")
        self.averages = average_by_position(
            [(self.where[p][1], m.tensors, float(m.meta["n"])) for p, m in sorted(weights.items())]
        )
        clients.reply_all(lambda peer: Message("weights", tensors=self.averages[self.where[peer][1]]))
        return RoundResult(tally)

    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        _, done = self._relay(clients, "eval")
        tally = Tally(len(self.classes))
        for msg in done.values():
            if "count" in msg.meta:
                tally.add_meta(msg.meta)
        return RoundResult(tally)

    def checkpoint(self) -> dict[str, Any]:
        return {"segments": self.averages}


def _validate(config: RunConfig, index: Any) -> None:
    """Groups fill up, and (with data) every segment gets time steps and rows."""
    segments = int(config.option("segments"))
    groups = layout(config.clients, segments)
    if index is not None:
        length = to_sequence(torch.zeros(1, *index.shape), config.option("sequence")).shape[1]
        segment_bounds(length, segments)
        check_partition(config, index, groups)


SPEC = FEDSL.with_roles(
    server=FedSLServer,
    client=FedSLClient,
    messages=frozenset({"pull", "hidden", "gradient", "weights"}),
    validate=_validate,
)
