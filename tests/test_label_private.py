"""Label-private SplitFed (--labels client): the U-shaped split of SFLv1 and SFLv2.

The maths: with one client it equals centralised training of the unsplit model (1e-5). The
privacy claim: the server never receives a label, a logit or a batch's loss (a spy on its
transport reads everything that arrives). Metrics counted on the clients, and the flags (the exact
resume is in test_resume.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_equivalence_sfl import assert_trains_as_centralised

from splitfed.checks import check_run
from splitfed.config import RunConfig
from splitfed.errors import ConfigError
from splitfed.registry import get as get_protocol
from splitfed.testing import run_in_threads
from splitfed.transport.base import ServerTransport
from splitfed.wire import decode


class Spy(ServerTransport):
    """Wraps the server's transport and decodes every message it receives."""

    def __init__(self, inner: ServerTransport) -> None:
        self.inner, self.address = inner, inner.address
        self.seen: list = []

    def recv(self, timeout: float):
        got = self.inner.recv(timeout)
        if got is not None:
            self.seen.append(decode([bytes(f) for f in got[1]]))
        return got

    def send(self, peer, frames, *, block: bool = True) -> bool:
        return self.inner.send(peer, frames, block=block)

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


def _summary(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize(("protocol", "head"), [("sflv1", 1), ("sflv2", 1), ("sflv1", 2)])
def test_one_client_label_private_equals_centralised(protocol: str, head: int, tmp_path: Path) -> None:
    config = RunConfig(
        protocol=protocol,
        clients=1,
        epochs=3,
        local_epochs=2,
        batch_size=64,
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        seed=11,
        timeout=30,
        options={"labels": "client", "head_blocks": head},
    )
    ckpt = assert_trains_as_centralised(config, tmp_path)
    assert any(k.startswith("head.") for k in ckpt["client_half"])  # the client holds the classifier
    assert not any(k.startswith("head.") for k in ckpt["server_half"])


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2"])
def test_the_server_never_receives_labels_or_logits(protocol: str, tmp_path: Path) -> None:
    config = RunConfig(protocol=protocol, clients=2, epochs=2, seed=4, timeout=30, options={"labels": "client"})
    spies: list[Spy] = []
    summary = _summary(
        run_in_threads(config, tmp_path, wrap_server=lambda inner: spies.append(Spy(inner)) or spies[-1])
    )
    kinds = {}
    for msg in spies[0].seen:
        kinds.setdefault(msg.kind, set()).update(msg.tensors)
        if msg.kind in ("forward", "headgrad", "eval"):  # a batch's messages carry none of its figures
            assert "loss" not in msg.meta and "correct" not in msg.meta, msg.kind
        if msg.kind == "headgrad":  # the gradient at the head's input: the middle's output shape, never (B, classes)
            assert tuple(msg.tensors["grad"].shape[1:]) == (128, 2, 2)
    assert kinds["forward"] == {"acts"} and kinds["headgrad"] == {"grad"} and kinds["eval"] == {"acts"}
    # the clients' own sums still make the run's figures
    assert summary["test_accuracy"] > 0.6 and summary["train_accuracy"] > 0.5
    assert 0 < summary["test_macro_f1"] <= 1


def test_the_clients_test_tallies_are_what_splitfed_evaluate_finds(tmp_path: Path) -> None:
    """The figures the clients count on their own test rows (accuracy, loss, confusion) are exactly those of
    the checkpoint's whole model (front, middle and head) rebuilt and tested by `splitfed evaluate`."""
    from splitfed.evaluate import evaluate_run

    config = RunConfig(protocol="sflv1", clients=2, epochs=2, seed=4, timeout=30, options={"labels": "client"})
    summary = _summary(run_in_threads(config, tmp_path))
    report = evaluate_run(tmp_path)
    assert report["rows"] == sum(map(sum, summary["confusion"])) > 0
    assert report["accuracy"] == summary["test_accuracy"]
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert report["confusion"] == summary["confusion"]


def test_with_int8_bf16_and_defences_it_still_learns(tmp_path: Path) -> None:
    config = RunConfig(
        protocol="sflv1",
        clients=2,
        epochs=3,
        seed=4,
        timeout=30,
        wire_compress="int8",
        precision="bf16-mixed",
        dp_clip=5.0,
        dp_noise=0.01,
        options={"labels": "client"},
    )
    summary = _summary(run_in_threads(config, tmp_path))
    assert summary["test_accuracy"] > 0.6


def test_the_flags_are_checked_before_anything_starts() -> None:
    spec = get_protocol("sflv1")
    with pytest.raises(ConfigError, match="leaves the server no block") as refused:
        check_run(RunConfig(protocol="sflv1", cut=2, options={"labels": "client", "head_blocks": 2}), spec)
    assert "--privacy" not in str(refused.value)  # no preset set that cut
    with pytest.raises(ConfigError, match=r"the deepest cut that leaves the server a block with weights is 2$"):
        check_run(RunConfig(protocol="sflv1", cut=3, options={"labels": "client"}), spec)
    with pytest.raises(ConfigError, match=r"no cut leaves the server a block with weights with --head-blocks 3$"):
        check_run(RunConfig(protocol="sflv1", options={"labels": "client", "head_blocks": 3}), spec)
    with pytest.raises(ConfigError, match="--head-blocks applies with --labels client only"):
        check_run(RunConfig(protocol="sflv1", options={"head_blocks": 2}), spec)
    with pytest.raises(ConfigError, match="--head-blocks"):
        check_run(RunConfig(protocol="sflv2", options={"labels": "client", "head_blocks": 0}), get_protocol("sflv2"))
    with pytest.raises(ConfigError, match="--privacy strong sets --cut 5 unless you give one"):
        check_run(RunConfig(protocol="sflv1", privacy="strong", options={"labels": "client"}), spec)
    check_run(RunConfig(protocol="sflv1", cut=2, options={"labels": "client"}), spec)  # 2 + 1 of 4 blocks: fine
    with pytest.raises(ConfigError, match=r"only \['pool'\] of mobilenet-private, which has no weights"):
        check_run(RunConfig(protocol="sflv1", cut=4, privacy="strong", options={"labels": "client"}), spec)
    check_run(RunConfig(protocol="sflv1", cut=3, privacy="strong", options={"labels": "client"}), spec)


def test_with_some_clients_per_round_the_sitting_out_clients_catch_up(tmp_path: Path) -> None:
    """--clients-per-round: a client that sat a round out loads the averaged front and head and tests with them."""
    config = RunConfig(
        protocol="sflv1", clients=3, clients_per_round=2, epochs=3, seed=2, timeout=30, options={"labels": "client"}
    )
    summary = _summary(run_in_threads(config, tmp_path))
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.8
