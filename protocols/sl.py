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
from splitfed.peers import Clients, Server
from splitfed.protocol import RoundResult
from splitfed.wire import Message

from .declarations import SL
from .sfl_client import SFLClient
from .sfl_server import SFL_MESSAGES, SFLServerBase


class SLClient(SFLClient):
    def train_round(self, server: Server, round: int) -> None:
        start = server.request(Message("turn"), "weights")  # answered when it is our turn
        self.half.load_state_dict(start.tensors)
        super().train_round(server, round)


class SLServer(SFLServerBase):
    def half_keys(self) -> list[str]:
        return ["shared"]

    def half_for(self, peer: str) -> str:
        return "shared"

    def train_round(self, clients: Clients, round: int) -> RoundResult:
        tally = Tally(len(self.classes))
        queue = clients.names  # fixed order; the first client of the round starts from the last one's weights
        waiting: set[str] = set()
        current: str | None = None

        def hand_on() -> None:
            nonlocal current
            if current is None and queue and queue[0] in waiting:
                current = queue.pop(0)
                waiting.discard(current)
                clients.reply(current, Message("weights", tensors=self.client_state))

        def in_turn(peer: str) -> None:
            if peer != current:
                raise ProtocolError(f"{peer} trained out of turn (it is {current}'s turn)")

        def turn(peer: str, msg: Message) -> None:
            waiting.add(peer)
            hand_on()

        def forward(peer: str, msg: Message) -> None:
            in_turn(peer)
            self.forward_step(clients, peer, msg, tally)

        def finished(peer: str, msg: Message) -> None:
            nonlocal current
            in_turn(peer)
            self.client_state, current = dict(msg.tensors), None
            hand_on()

        def skip(peer: str) -> None:
            """A lost client's turn is skipped; what it trained of the client half is never handed on. It may
            have gone before it asked for its turn, holding up the next in line: the next turn begins either way."""
            nonlocal current
            if peer in queue:
                queue.remove(peer)
            waiting.discard(peer)
            if current == peer:
                current = None
            hand_on()

        clients.gather("weights", on={"turn": turn, "forward": forward}, each=finished, lost=skip)
        clients.reply_all(Message("weights", tensors=self.client_state))
        return RoundResult(tally)


SPEC = SL.with_roles(server=SLServer, client=SLClient, messages=SFL_MESSAGES | {"turn"})
