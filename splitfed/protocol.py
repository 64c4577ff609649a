"""The interface between the runtime and a protocol: two roles, two classes.

A protocol module (under ``protocols/``) defines a :class:`ProtocolSpec` with a
:class:`ServerRole` and a :class:`ClientRole`. The runtime owns the loop::

    server: role.setup(link); for r in rounds: role.train_round(link, r); role.evaluate(link, r)
    client: role.setup(link); for r in rounds: role.train_round(link, r); role.evaluate(link, r)

Roles never touch sockets: they get a :class:`~splitfed.transport.link.ServerLink`
or :class:`~splitfed.transport.link.ClientLink`. ``ServerRole.evaluate`` returns once
every client has sent ``eval_done`` and leaves those requests unanswered: the runtime
answers them with ``ack`` (next round) or ``done`` (the run is over).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from splitfed.config import RunConfig

if TYPE_CHECKING:  # `splitfed --help` and `import splitfed` must not wait for torch
    import torch

    from splitfed.metrics import Tally


@dataclass
class DataRequest:
    """What a client was told about its data on its own command line."""

    source: str = "digits"
    partition: str = "iid"
    test_split: str = "random"
    test_fraction: float = 0.2
    seed: int = 0
    shard: str = "auto"  # "auto": the rows the server's index assigns; "all": the whole local dataset


@dataclass
class Assignment:
    """What the server told a client in ``welcome``."""

    config: RunConfig
    index: int  # this client's position, 0..clients-1
    clients: int


@dataclass
class RoundResult:
    """What a server role reports after a round of training or evaluation."""

    tally: Tally
    extra: dict[str, Any] = field(default_factory=dict)


class ServerRole(ABC):
    #: False for protocols whose state is not all on the server (a resume would lose it)
    resumable: bool = True

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.classes: list[str] = []
        #: set by the runtime before setup() when a run resumes: what checkpoint() returned
        self.resume: dict[str, Any] | None = None

    @abstractmethod
    def setup(self, link: Any) -> dict[str, Any]:
        """Handshake with the clients after ``welcome``; returns facts for config.json/summary."""

    @abstractmethod
    def train_round(self, link: Any, round: int) -> RoundResult: ...

    @abstractmethod
    def evaluate(self, link: Any, round: int) -> RoundResult: ...

    def checkpoint(self) -> dict[str, Any]:
        """The server's state at round end: global weights and the state of every optimizer it
        steps. On resume it comes back as ``self.resume``, so the run continues exactly."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Extra fields for summary.json (e.g. PSI figures)."""
        return {}


class ClientRole(ABC):
    #: True where the run cannot continue without this client's own state (PyVertical's heads)
    state_required: bool = False

    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        self.assignment, self.config = assignment, assignment.config
        self.data, self.device, self.name = data, device, name

    @abstractmethod
    def setup(self, link: Any) -> None: ...

    @abstractmethod
    def train_round(self, link: Any, round: int) -> None: ...

    @abstractmethod
    def evaluate(self, link: Any, round: int) -> None:
        """Evaluate, then send ``eval_done`` without waiting: the runtime reads the answer."""

    def state_dict(self) -> dict[str, Any]:
        """What this client owns that the server never holds (optimizer state, private layers).

        Saved by the client itself at every checkpointed round (``--state-dir``) and handed
        back through :meth:`load_state_dict` when the run resumes.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after ``setup``, which loaded the global weights)."""
        return None


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    summary: str
    server: type[ServerRole]
    client: type[ClientRole]
    #: adds protocol-specific flags to ``splitfed run NAME`` / ``splitfed server NAME``
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: turns parsed flags into ``RunConfig.options``
    options: Callable[[argparse.Namespace], dict[str, Any]] | None = None
    #: sensible defaults that differ from RunConfig's (e.g. another learning rate)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: False for protocols run in one process with no clients (centralised)
    distributed: bool = True
    #: False where a client holds part of each example (feature bands, sequence segments):
    #: augmenting parts on their own would break the examples, so --augment is refused
    augments: bool = True
    #: False where the protocol builds its own networks from images (FedSL's recurrent segments,
    #: PyVertical's band heads): --model does not apply, and the data must be images
    uses_model: bool = True
    #: checks the protocol's own rules before any process starts; raises ConfigError/DataError.
    #: Given the config and the dataset's index (None where the caller holds no data, as a
    #: remote server). Without it the runtime checks the split model's cut and the partition.
    validate: Callable[[RunConfig, Any], None] | None = None
