"""The contract between the runtime and a protocol: a :class:`ProtocolSpec` with two roles.

A protocol module defines one ``SPEC`` (entry-point group ``splitfed.protocols``, directly or
through a light :class:`~splitfed.declaration.Declaration` that names it): its two roles, the
message kinds it sends (:attr:`ProtocolSpec.messages`) and its own options (:class:`Option`,
validated before any process starts). The runtime owns the rest::

    server: hello/welcome; ready from every client -> role.setup(clients, ready) -> ack to all
            (carrying role.start(peer)) -> role.prepare(clients); then per round
            role.train_round(clients, r); role.evaluate(clients, r) -> ack or done to every client
    client: hello/welcome; ready (role.describe()) -> role.setup(server, ack); then per round
            role.train_round(server, r); eval_done (role.evaluate(server, r)) -> ack or done

Roles never touch sockets or links: the server role gets :class:`~splitfed.peers.Clients`
(``gather``, ``reply``, ``reply_all``, ``recv``) and the client role a
:class:`~splitfed.peers.Server` (``request``, ``send``, ``heartbeat``). A link refuses any
kind outside the runtime's own (:data:`splitfed.wire.RUNTIME_KINDS`) and the protocol's
``messages``. ``ServerRole.evaluate`` gathers every client's ``eval_done`` (serving their
test batches meanwhile) and leaves those requests unanswered: the runtime answers them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from splitfed.config import RunConfig
from splitfed.declaration import Option, option_values
from splitfed.errors import ConfigError

if TYPE_CHECKING:  # `splitfed --help` and `import splitfed` must not wait for torch
    import torch

    from splitfed.metrics import Tally
    from splitfed.peers import Clients, Server
    from splitfed.wire import Message


#: the key of ``ready`` under which the runtime reports a client's own data settings (the role never sees it)
DATA_REPORT = "data_request"


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
    #: which rows the coming evaluate() pass runs over, set by the runtime: "test", or "val" (--val-fraction)
    eval_split: str = "test"

    def __init__(self, config: RunConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.classes: list[str] = []
        #: set by the runtime before setup() when a run resumes: what checkpoint() returned
        self.resume: dict[str, Any] | None = None

    @abstractmethod
    def setup(self, clients: Clients, ready: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Set up from every client's ``ready`` description (by client, in client order), before the
        runtime acks them; returns facts for config.json. ``self.resume`` is set when a run resumes."""

    def start(self, peer: str) -> Message | None:
        """What the runtime's ``ack`` to ``peer``'s ``ready`` carries (e.g. a resumed run's weights)."""
        return None

    def prepare(self, clients: Clients) -> dict[str, Any]:
        """Exchanges that follow the handshake, before round 1 (PyVertical's PSI); more facts."""
        return {}

    #: True where a round can run with some of the clients (--clients-per-round, --min-clients, rejoins):
    #: ``train_round`` then trains ``clients.names`` only and lets a gather drop a lost one
    partial: bool = False

    def current(self, peer: str) -> Message:
        """The ``ack`` that brings ``peer`` up to date: the global weights, for a client that sat a
        round out or (re)joined at a round's start (``partial`` roles only)."""
        raise NotImplementedError(f"{type(self).__name__} trains with every client in every round")

    def join(self, peer: str, ready: dict[str, Any]) -> None:
        """``peer`` (re)joined the run with this ``ready`` description, to train from the next round."""
        raise NotImplementedError(f"{type(self).__name__} takes no members after the start")

    @abstractmethod
    def train_round(self, clients: Clients, round: int) -> RoundResult: ...

    @abstractmethod
    def evaluate(self, clients: Clients, round: int) -> RoundResult:
        """Serve the clients' evaluation until every one has sent ``eval_done`` (``clients.gather``),
        leaving those unanswered: the runtime answers them with ``ack`` or ``done``."""

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
    #: which rows the coming evaluate() pass runs over, set by the runtime: "test", or "val" (--val-fraction)
    eval_split: str = "test"

    def __init__(self, assignment: Assignment, data: DataRequest, device: torch.device, name: str) -> None:
        self.assignment, self.config = assignment, assignment.config
        self.data, self.device, self.name = data, device, name

    def describe(self) -> dict[str, Any]:
        """What this client tells the server in ``ready`` (its data); sent by the runtime."""
        return {}

    def setup(self, server: Server, ack: Message) -> None:
        """The server's ``ack`` to ``ready`` arrived (with a resumed run's weights, where it has any)."""
        return None

    @abstractmethod
    def train_round(self, server: Server, round: int) -> None: ...

    def sync(self, ack: Message) -> None:
        """Load the global weights the server sent after a round this client sat out."""
        raise NotImplementedError(f"{type(self).__name__} cannot sit a round out")

    @abstractmethod
    def evaluate(self, server: Server, round: int) -> dict[str, Any]:
        """Evaluate; returns what the runtime's ``eval_done`` carries (e.g. a tally's to_meta())."""

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
    #: the message kinds this protocol sends, besides the runtime's own (a link refuses any other)
    messages: frozenset[str] = frozenset()
    #: its own options: flags of ``splitfed run NAME`` / ``splitfed server NAME``, kept in ``RunConfig.options``
    options: tuple[Option, ...] = ()
    #: sensible defaults that differ from RunConfig's (e.g. another learning rate)
    defaults: dict[str, Any] = field(default_factory=dict)
    #: False for protocols run in one process with no clients (centralised)
    distributed: bool = True
    #: "examples" where a client holds whole examples and augments them (any --augment);
    #: "bands" where it holds a band of every example (feature bands, sequence segments): every
    #: party applies the same whole-image transform to its band (splitfed.data.band_augment),
    #: so only the built-in augmentations apply
    augments: str = "examples"
    #: False where the protocol builds its own networks from images (FedSL's recurrent segments,
    #: PyVertical's band heads): --model does not apply, and the data must be images
    uses_model: bool = True
    #: True where clients send cut activations the SplitFed way (SFLClient and SFLServerBase), which honour
    #: --wire-compress and the client-side defences (--dp-clip, --dp-noise, --nopeek); refused elsewhere
    smashed: bool = False
    #: True where the roles' evaluate() honours ``eval_split`` (validation rows, --val-fraction)
    validates: bool = True
    #: checks the protocol's own rules before any process starts; raises ConfigError/DataError.
    #: Given the config and the dataset's index (None where the caller holds no data, as a
    #: remote server). Without it the runtime checks the split model's cut and the partition.
    validate: Callable[[RunConfig, Any], None] | None = None
    #: False where the parties take turns (one computes while the others wait: SFLv2, SL); True
    #: where the clients compute at the same time. Sets how many cores each process's torch gets.
    parallel_clients: bool = True

    def busy_parties(self, clients: int) -> int:
        """How many parties compute at once: the cores are shared among these, not among all processes.

        The server of a split protocol waits while its clients compute and they wait while it
        steps (SFLv1's server steps its copies side by side, one per client), so it is never
        one more on top of them."""
        return clients if self.distributed and self.parallel_clients else 1

    def __post_init__(self) -> None:
        from splitfed.wire import RUNTIME_KINDS, check_kind

        for kind in self.messages:
            check_kind(kind)  # a short lower-case identifier, as the wire wants
        taken = sorted(self.messages & RUNTIME_KINDS)
        if taken:
            raise ConfigError(f"protocol {self.name!r} declares the runtime's own kinds {taken}; leave them out")

    def option_values(self, given: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """Every option of this protocol: the given values (a mapping or keywords) converted and
        checked, defaults for the rest. Raises ConfigError naming the flag of a bad or unknown one."""
        return option_values(self.name, self.options, given, kwargs)
