"""The link under stress: lost replies are retried without stepping twice, and strangers never end a run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from splitfed.config import RunConfig
from splitfed.fuzzing import run_with_strangers
from splitfed.testing import run_in_threads
from splitfed.transport.base import Frames, ServerTransport


class DropOneReply(ServerTransport):
    """Wraps the server's transport and loses the ``nth`` reply of ``kind`` to ``peer``, once."""

    def __init__(self, inner: ServerTransport, peer: str, kind: str, nth: int) -> None:
        self.inner, self.peer, self.kind, self.nth = inner, peer, kind, nth
        self.address = inner.address
        self.seen = 0
        self.dropped = False

    def recv(self, timeout: float):
        return self.inner.recv(timeout)

    def send(self, peer: str, frames: Frames, *, block: bool = True) -> bool:
        if not self.dropped and peer == self.peer and json.loads(bytes(frames[0]))["kind"] == self.kind:
            self.seen += 1
            if self.seen == self.nth:
                self.dropped = True
                return True  # "sent", and lost on the way
        return self.inner.send(peer, frames, block=block)

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


def test_a_lost_reply_is_retried_and_the_step_applied_once(tmp_path: Path) -> None:
    config = RunConfig(protocol="sflv1", clients=2, epochs=2, timeout=3.0, seed=11)
    plain = json.loads(run_in_threads(config, tmp_path / "plain").read_text())
    drops: list[DropOneReply] = []

    def wrap(inner: ServerTransport) -> ServerTransport:
        drops.append(DropOneReply(inner, "client-1", "gradient", nth=5))
        return drops[-1]

    lossy = json.loads(run_in_threads(config, tmp_path / "lossy", wrap_server=wrap).read_text())
    assert drops[0].dropped
    assert lossy["messages_repeated"] == 1 and plain["messages_repeated"] == 0
    for key in ("test_loss", "test_accuracy", "train_loss"):
        assert lossy[key] == plain[key], key  # the retried step was answered from the cache, not stepped again
    a = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "lossy" / "checkpoint.pt", weights_only=True)
    for part in ("client_half", "server_half"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_a_fuzzed_server_finishes_the_run_with_the_same_figures(tmp_path: Path) -> None:
    """Thousands of malformed and hostile messages from strangers, during a real run over tcp: rejected,
    never fatal, and the run ends with the figures of the same run without them."""
    calm = run_with_strangers(tmp_path / "calm", epochs=8, attack_seed=None)
    fuzzed = run_with_strangers(tmp_path / "fuzzed", epochs=8, attack_seed=0)
    summary = fuzzed["summary"]
    assert fuzzed["sent"] >= 1000, fuzzed["sent"]
    assert summary["status"] == "completed" and summary["messages_rejected"] >= fuzzed["sent"] // 3, summary
    for key in ("test_loss", "test_accuracy", "train_loss", "train_accuracy", "test_macro_f1"):
        assert summary[key] == calm["summary"][key], key
    assert fuzzed["peak_mb"] < calm["peak_mb"] + 300, (fuzzed["peak_mb"], calm["peak_mb"])  # memory stays bounded
