"""One exception hierarchy for the whole framework.

Every message says what went wrong and, where possible, what to do next.
Low-level errors (zmq, OS, JSON) are mapped to these where they enter.
"""

from __future__ import annotations


class Terminated(BaseException):
    """SIGTERM arrived: stop like Ctrl-C, writing what we have first.

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` swallows it.
    The command line installs the handler that raises it (see ``splitfed.cli``).
    """


class SplitFedError(Exception):
    """Base class of every error splitfed raises on purpose."""


class ConfigError(SplitFedError):
    """A setting or a combination of settings is invalid."""


class DataError(SplitFedError):
    """A dataset is missing, malformed, or cannot serve the requested split."""


class WireError(SplitFedError):
    """A message could not be encoded or was rejected while decoding."""


class TransportError(SplitFedError):
    """A socket-level failure: cannot bind, connect, send or receive."""


class PeerLostError(TransportError):
    """A peer stopped answering within the timeout, or its connection dropped."""

    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(f"lost {peer}: {detail}")
        self.peer = peer


class ProtocolError(SplitFedError):
    """A peer sent a well-formed message that makes no sense at this point."""


class DivergedError(SplitFedError):
    """A loss became NaN or infinite: training diverged."""


class RemoteError(SplitFedError):
    """The other side reported an error; its text is carried along."""

    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(f"{peer} reported: {detail}")
        self.peer = peer
        self.detail = detail


class PartyFailedError(SplitFedError):
    """A process of a local run exited with a failure."""

    def __init__(self, party: str, detail: str) -> None:
        super().__init__(f"{party} failed: {detail}")
        self.party = party
