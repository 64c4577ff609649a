"""The ``ready`` handshake of protocols whose clients all hold the same kind of data."""

from __future__ import annotations

from dataclasses import dataclass

from splitfed.data.shards import ClientShard
from splitfed.errors import ProtocolError
from splitfed.transport.link import ServerLink
from splitfed.wire import Message


def ready_message(shard: ClientShard) -> Message:
    meta = {
        "n_train": len(shard.train_y),
        "n_test": len(shard.test_y),
        "classes": shard.classes,
        "shape": list(shard.shape),
    }
    return Message("ready", meta=meta)


@dataclass
class Joined:
    """What the clients said in ``ready``: the same classes and input shape on every one."""

    clients: list[str]
    n_train: dict[str, int]
    classes: list[str]
    shape: tuple[int, int, int]
    facts: dict  # for config.json

    @classmethod
    def gather(cls, link: ServerLink) -> Joined:
        """Collect every client's ``ready`` (left unanswered: the caller acks when it is set up)."""
        ready: dict[str, dict] = {}
        while len(ready) < len(link.clients):
            peer, msg = link.recv(expect=("ready",))
            ready[peer] = msg.meta
        first_peer = link.clients[0]
        first = ready[first_peer]
        for peer, meta in ready.items():
            if meta["classes"] != first["classes"] or meta["shape"] != first["shape"]:
                raise ProtocolError(
                    f"{peer} holds classes {meta['classes']} of shape {meta['shape']}, but "
                    f"{first_peer} holds {first['classes']} of shape {first['shape']}: every client needs the same"
                )
        clients = list(link.clients)
        return cls(
            clients=clients,
            n_train={p: int(ready[p]["n_train"]) for p in clients},
            classes=list(first["classes"]),
            shape=tuple(first["shape"]),
            facts={
                "client_data": {p: {k: ready[p][k] for k in ("n_train", "n_test")} for p in clients},
                "classes": list(first["classes"]),
                "input_shape": list(first["shape"]),
            },
        )

    def ack(self, link: ServerLink, start: dict | None = None) -> None:
        """Answer every ``ready``; ``start`` (weights) goes along when a run resumes."""
        for peer in self.clients:
            link.reply(peer, Message("ack", tensors=dict(start or {})))
