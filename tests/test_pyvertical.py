"""PyVertical: PSI over real sockets, each head its own gradient, nothing private on the wire, it learns."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from splitfed.protocols import psi, pyvertical

from splitfed.config import RunConfig
from splitfed.errors import ConfigError, DataError
from splitfed.models.vertical import EMBED, HEADS, band_head
from splitfed.testing import run_in_threads
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.transport.zeromq import ZmqServerTransport
from splitfed.wire import Message


def psi_over_sockets(member_thread, holder_ids: list[str], owner_ids: list[str]) -> set[str]:
    """One label holder and one owner, each on its own socket over tcp loopback."""
    server = ServerLink(ZmqServerTransport("tcp://127.0.0.1:*", max_bytes=2**26), timeout=20)

    def owner(link: ClientLink) -> None:
        ask = link.request(Message("hello"), expect=("psi",))
        setup, response = psi.owner_answer(owner_ids, psi.to_bytes(ask.tensors["request"]), int(ask.meta["n"]))
        link.request(
            Message("psi", tensors={"setup": psi.to_tensor(setup), "response": psi.to_tensor(response)}),
            expect=("ack",),
        )

    try:
        with member_thread(server.transport.address, "owner", owner) as errors:
            peer, _ = server.recv(expect=("hello",))
            server.register(peer)
            holder = psi.LabelHolder(holder_ids)
            server.reply(
                peer, Message("psi", meta={"n": len(holder.ids)}, tensors={"request": psi.to_tensor(holder.request)})
            )
            _, msg = server.recv(expect=("psi",))
            common = holder.common_with(psi.to_bytes(msg.tensors["setup"]), psi.to_bytes(msg.tensors["response"]))
            server.reply(peer, Message("ack"))
    finally:
        server.close()
    assert not errors, errors
    return common


@pytest.mark.parametrize("case", ["partial", "duplicates", "empty", "disjoint"])
def test_psi_over_sockets_equals_plain_intersection(member_thread, case: str) -> None:
    rng = random.Random(case)
    pool = [f"id-{rng.randrange(10**9)}" for _ in range(600)]
    holder, owner = pool[:400], pool[200:]
    if case == "duplicates":
        holder, owner = holder + holder[:50], owner + owner[:80]
    elif case == "empty":
        owner = []
    elif case == "disjoint":
        holder, owner = pool[:300], pool[300:]
    assert psi_over_sockets(member_thread, holder, owner) == set(holder) & set(owner)


def test_psi_errors_are_clear() -> None:
    with pytest.raises(DataError, match="share no sample id"):
        psi.check_intersection(set(), 10, 2)
    with pytest.raises(DataError, match="only 3 sample id"):
        psi.check_intersection({"a", "b", "c"}, 10, 2)
    with pytest.raises(DataError, match="must be strings"):
        psi.unique_ids(["a", 3])


@pytest.mark.parametrize("size", [(8, 1), (8, 4), (32, 32), (64, 64)])
def test_every_head_kind_takes_any_band_and_gives_the_embedding(size: tuple[int, int]) -> None:
    for kind in HEADS:
        head = band_head(1, *size, kind).eval()
        assert head(torch.zeros(2, 1, *size)).shape == (2, EMBED), (kind, size)
    with pytest.raises(ConfigError, match="--head"):
        band_head(1, 8, 8, "vgg")


def test_each_head_gets_its_own_gradient_slice() -> None:
    """The vertical split equals a centralised model with the same block structure."""
    torch.manual_seed(0)
    heads = [torch.nn.Linear(5, 4), torch.nn.Linear(3, 6)]
    top = torch.nn.Linear(10, 3)
    xs, y = [torch.randn(8, 5), torch.randn(8, 3)], torch.randint(0, 3, (8,))
    ref_top = {k: v.clone() for k, v in top.state_dict().items()}

    loss = F.cross_entropy(top(torch.cat([h(x) for h, x in zip(heads, xs, strict=True)], dim=1)), y)  # centralised
    loss.backward()
    central = [[p.grad.clone() for p in h.parameters()] for h in heads]
    for h in heads:
        h.zero_grad()

    top.load_state_dict(ref_top)
    parts = [h(x) for h, x in zip(heads, xs, strict=True)]
    grads, logits, loss_sum = pyvertical.top_step(top, torch.optim.SGD(top.parameters(), lr=0.0), parts, y)
    assert loss_sum == pytest.approx(float(loss.detach()) * 8, rel=1e-6)
    for part, grad, h, ref in zip(parts, grads, heads, central, strict=True):
        part.backward(grad)
        for p, g in zip(h.parameters(), ref, strict=True):
            assert torch.allclose(p.grad, g, atol=1e-6)
    assert not torch.allclose(grads[0][:, :3], grads[1][:, :3])  # different heads, different slices


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, Message]]:
    """Every message any client sends during the test, as (client name, message)."""
    record: list[tuple[str, Message]] = []
    real_send = ClientLink.send

    def spy(self, msg):
        real_send(self, msg)
        record.append((self.name, msg))

    monkeypatch.setattr(ClientLink, "send", spy)
    return record


def test_owners_send_no_raw_features_and_no_ids(tmp_path: Path, sent: list) -> None:
    config = RunConfig(protocol="pyvertical", clients=2, epochs=1, seed=2, timeout=30, options={"overlap": 0.8})
    summary = json.loads(run_in_threads(config, tmp_path).read_text())
    assert 0 < summary["intersection_size"] < 1797

    from splitfed.data.datasets import load_index

    all_ids = load_index("digits").ids
    allowed = {"hello", "ready", "psi", "pull", "forward", "eval", "eval_done"}
    assert sent
    for name, msg in sent:
        assert msg.kind in allowed, (name, msg.kind)
        assert set(msg.tensors) <= {"setup", "response", "acts"}, (name, msg.kind, list(msg.tensors))
        if "acts" in msg.tensors:
            assert msg.tensors["acts"].shape[1] == 64  # embeddings, never image bands (8x4 pixels)
        text = json.dumps(msg.meta)
        assert "digit-" not in text
        for key in ("setup", "response"):
            if key in msg.tensors:
                blob = psi.to_bytes(msg.tensors[key])
                assert not any(i.encode() in blob for i in all_ids[::50]), "an id travelled in plain text"


@pytest.mark.parametrize("labels", ["server", "client"])
def test_two_owner_processes_learn(run_protocol, labels: str) -> None:
    s, out = run_protocol("pyvertical", "--clients", "2", "--epochs", "3", "--overlap", "0.9", "--labels", labels)
    assert s["test_accuracy"] > 0.8 and s["intersection_size"] > 1000 and s["psi_seconds"] > 0, s
    assert s["labels_with"] == ("server" if labels == "server" else "client-0")


def test_labels_on_client_never_leave_it(tmp_path: Path, sent: list) -> None:
    """With --labels client, client 0 sends only gradients of logits and counts, never labels."""
    config = RunConfig(
        protocol="pyvertical", clients=3, epochs=2, seed=1, timeout=30, options={"overlap": 0.9, "labels": "client"}
    )
    summary = json.loads(run_in_threads(config, tmp_path).read_text())
    assert summary["labels_with"] == "client-0" and summary["test_accuracy"] > 0.6, summary
    holder = [m for name, m in sent if name == "client-0"]
    others = [m for name, m in sent if name != "client-0"]
    assert {t for m in others for t in m.tensors} <= {"setup", "response", "acts"}
    assert {t for m in holder for t in m.tensors} <= {"request", "train", "test", "acts", "grad"}
    grads = [m for m in holder if m.kind == "gradient"]
    assert grads and all(set(m.meta) <= {"loss_sum", "correct", "count"} for m in grads)  # no confusion per batch
    for m in grads:
        if "grad" in m.tensors:
            assert m.tensors["grad"].shape[1] == 10  # d(loss)/d(logits), one column per class
    done = [m for m in holder if m.kind == "eval_done"]
    assert len(done) == 2 and all(sum(map(sum, m.meta["confusion"])) == m.meta["count"] for m in done)
