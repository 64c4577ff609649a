"""What clients that all hold the same kind of data say in ``ready``, and what the server makes of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from splitfed.data.shards import ClientShard
from splitfed.errors import ConfigError, ProtocolError


def describe_shard(shard: ClientShard) -> dict[str, Any]:
    """A client's ``ready`` description of its rows (the runtime sends it)."""
    return {
        "n_train": len(shard.train_y),
        "n_test": len(shard.test_y),
        "classes": shard.classes,
        "shape": list(shard.shape),
    }


@dataclass
class Joined:
    """What the clients said in ``ready``: the same classes and input shape on every one."""

    clients: list[str]
    n_train: dict[str, int]
    classes: list[str]
    shape: tuple[int, int, int]
    facts: dict  # for config.json

    @classmethod
    def from_ready(cls, ready: dict[str, dict]) -> Joined:
        """Check every client's description (in client order) against the first's."""
        clients = list(ready)
        first_peer = clients[0]
        first = ready[first_peer]
        for peer, meta in ready.items():
            if meta["classes"] != first["classes"] or meta["shape"] != first["shape"]:
                raise ProtocolError(
                    f"{peer} holds classes {meta['classes']} of shape {meta['shape']}, but "
                    f"{first_peer} holds {first['classes']} of shape {first['shape']}: every client needs the same"
                )
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


def check_joiner(peer: str, ready: dict[str, Any], classes: list[str], shape: tuple[int, ...]) -> None:
    """A client that joins after the start must hold the run's classes and input shape (ConfigError if not)."""
    if list(ready.get("classes", [])) != list(classes) or list(ready.get("shape", [])) != list(shape):
        raise ConfigError(
            f"{peer} holds classes {ready.get('classes')} of shape {ready.get('shape')}, but this run's classes are "
            f"{list(classes)} of shape {list(shape)}: a member needs the same (check its --data)"
        )
