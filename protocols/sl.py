"""Vanilla split learning (Gupta & Raskar): clients take turns, handing the client half on.

One client half and one server half. In each round the clients train one after another,
in a fixed order. A client starts from the client half the previous client left, trains
its local epoch(s) with the server, and returns the weights. Nothing is averaged. At round
end every client receives the final client half for testing. The client half is relayed
through the server (star topology); the server never trains it.
"""

from __future__ import annotations

from splitfed.errors import ProtocolError
from splitfed.metrics import Tally
from splitfed.protocol import ProtocolSpec, RoundResult
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.wire import Message

from .sfl_client import SFLClient
from .sfl_server import SFLServerBase


class SLClient(SFLClient):
    def train_round(self, link: ClientLink, round: int) -> None:
        start = link.request(Message("turn"), expect=("weights",))  # answered when it is our turn
        self.half.load_state_dict(start.tensors)
        super().train_round(link, round)


class SLServer(SFLServerBase):
    def half_keys(self) -> list[str]:
        return ["shared"]

    def half_for(self, peer: str) -> str:
        return "shared"

    def train_round(self, link: ServerLink, round: int) -> RoundResult:
        tally = Tally(len(self.classes))
        queue = list(self.clients)  # fixed order; the first client of the round starts from the last one's weights
        waiting: set[str] = set()
        finished: dict[str, Message] = {}
        current: str | None = None
        while len(finished) < len(self.clients):
            if current is None and queue and queue[0] in waiting:
                current = queue.pop(0)
                waiting.discard(current)
                link.reply(current, Message("weights", tensors=self.client_state))
            peer, msg = link.recv(expect=("turn", "forward", "weights"))
            if msg.kind == "turn":
                waiting.add(peer)
            elif peer != current:
                raise ProtocolError(f"{peer} trained out of turn (it is {current}'s turn)")
            elif msg.kind == "forward":
                self.forward_step(link, peer, msg, tally)
            else:
                self.client_state = dict(msg.tensors)
                finished[peer] = msg
                current = None
        for peer in self.clients:
            link.reply(peer, Message("weights", tensors=self.client_state))
        return RoundResult(tally)


SPEC = ProtocolSpec(
    name="sl",
    summary="Vanilla split learning: clients take turns on one model, handing the client half on",
    server=SLServer,
    client=SLClient,
)
