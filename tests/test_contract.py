"""The protocol contract: declared kinds, declared options, the peers interface, and a protocol from another package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from splitfed import registry
from splitfed.errors import ConfigError, ProtocolError, RemoteError
from splitfed.peers import Clients
from splitfed.transport.link import ClientLink, ServerLink
from splitfed.transport.zeromq import ZmqServerTransport
from splitfed.wire import RUNTIME_KINDS, Message

REPO = Path(__file__).resolve().parents[1]

TINY = '''
"""A protocol shipped in another package: each client reports a count, the server sums them."""

import torch

from splitfed.metrics import Tally
from splitfed.protocol import ClientRole, Option, ProtocolSpec, RoundResult, ServerRole
from splitfed.wire import Message


def _positive(value):
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")


def _guess(n):
    """A tally of a 'model' that always says class 0, on n samples of which every third is class 1."""
    tally = Tally(2)
    labels = torch.tensor([int(i % 3 == 2) for i in range(n)])
    tally.add(torch.tensor([[1.0, 0.0]] * n), labels, 0.5 * n)
    return tally


class TinyClient(ClientRole):
    def describe(self):
        return {"n": 10 + self.assignment.index}

    def setup(self, server, ack):
        self.n = 10 + self.assignment.index

    def train_round(self, server, round):
        reply = server.request(Message("count", meta={"n": self.n * self.config.option("scale")}), "total")
        assert reply.meta["total"] == sum(10 + i for i in range(self.assignment.clients)) * self.config.option("scale")

    def evaluate(self, server, round):
        return _guess(self.n).to_meta()


class TinyServer(ServerRole):
    def setup(self, clients, ready):
        self.classes = ["zero", "one"]
        return {"classes": self.classes, "client_data": ready}

    def train_round(self, clients, round):
        counts = clients.gather("count")
        total = sum(m.meta["n"] for m in counts.values())
        clients.reply_all(Message("total", meta={"total": total}))
        return RoundResult(_guess(6), extra={"total": total})

    def evaluate(self, clients, round):
        tally = Tally(2)
        for msg in clients.gather("eval_done").values():
            tally.add_meta(msg.meta)
        return RoundResult(tally)


SPEC = ProtocolSpec(
    name="tiny",
    summary="Tiny: clients report a count, the server sums",
    server=TinyServer,
    client=TinyClient,
    messages=frozenset({"count", "total"}),
    options=(Option("scale", int, 1, "multiplies every count", check=_positive),),
    validate=lambda config, index: None,
)
'''


@pytest.fixture
def tiny_env(tmp_path: Path) -> dict[str, str]:
    """A package ``tinyproto`` that registers ``tiny`` under splitfed.protocols, on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "tinyproto").mkdir(parents=True)
    (site / "tinyproto" / "__init__.py").write_text(TINY)
    info = site / "tinyproto-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyproto\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[splitfed.protocols]\ntiny = tinyproto:SPEC\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_a_protocol_from_another_package_runs_as_real_processes(splitfed_cmd, tiny_env, tmp_path: Path) -> None:
    listed = subprocess.run([*splitfed_cmd, "protocols"], capture_output=True, text=True, env=tiny_env, timeout=120)
    assert listed.returncode == 0 and "tiny" in listed.stdout, listed.stderr
    out = tmp_path / "run"
    args = ["run", "tiny", "--clients", "2", "--epochs", "2", "--scale", "3", "--quiet", "--out", str(out)]
    res = subprocess.run([*splitfed_cmd, *args], capture_output=True, text=True, env=tiny_env, timeout=300)
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_done"] == 2
    assert summary["test_accuracy"] == pytest.approx((7 + 8) / (10 + 11))  # class 0 is 2 of every 3 samples
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_total"] for r in rows] == [(10 + 11) * 3] * 2
    config = json.loads((out / "config.json").read_text())
    assert config["options"] == {"scale": 3} and config["client_data"]["client-0"] == {"n": 10}
    core = "".join(p.read_text() for p in (REPO / "splitfed").rglob("*.py"))
    assert "tinyproto" not in core and '"tiny"' not in core  # nothing in splitfed/ knows of it


def test_a_protocols_own_option_is_checked_before_any_process_starts(splitfed_cmd, tiny_env, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "tiny", "--scale", "0", "--out", str(out)]
    res = subprocess.run([*splitfed_cmd, *args], capture_output=True, text=True, env=tiny_env, timeout=120)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == "error: --scale must be at least 1, got 0"
    assert not out.exists()


def test_option_values_fill_defaults_convert_and_name_the_flag() -> None:
    spec = registry.get("fedsl")
    expected = {"cell": "gru", "segments": 3, "sequence": "rows", "hidden": 128, "encoder": "conv"}
    assert spec.option_values(segments="3") == expected
    assert spec.option_values({"cell": "lstm"}, hidden=8)["hidden"] == 8
    with pytest.raises(ConfigError, match="--segments must be at least 2, got 1"):
        spec.option_values(segments=1)
    with pytest.raises(ConfigError, match="--cell 'tanh' is not one of"):
        spec.option_values(cell="tanh")
    with pytest.raises(ConfigError, match="--hidden 'many' is not a valid int"):
        spec.option_values(hidden="many")
    with pytest.raises(ConfigError, match="fedsl has no option 'order'"):
        spec.option_values(order="sequential")
    assert registry.get("sl").option_values() == {}
    assert registry.get("sflv1").option_values() == {
        "labels": "server",
        "head_blocks": 1,
        "label_clip": 0.0,
        "label_noise": 0.0,
        "heads": "averaged",
    }


def test_every_protocol_declares_its_kinds_and_the_wire_names_none_of_them() -> None:
    wire = (REPO / "splitfed" / "wire.py").read_text()
    link = (REPO / "splitfed" / "transport" / "link.py").read_text()
    for name in registry.available():
        spec = registry.get(name)
        assert not spec.messages & RUNTIME_KINDS, name
        for kind in spec.messages:
            assert f'"{kind}"' not in wire and f'"{kind}"' not in link, (name, kind)


def test_no_protocol_receives_in_a_loop_or_touches_a_link() -> None:
    """Receiving until every client has answered is ``Clients.gather``'s job, in one place."""
    for path in (REPO / "protocols").glob("*.py"):
        text = path.read_text()
        assert "ServerLink" not in text and "ClientLink" not in text, path.name
        for loop in ast.walk(ast.parse(text)):
            if isinstance(loop, (ast.For, ast.While)):
                calls = [n for n in ast.walk(loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
                assert not [c for c in calls if c.func.attr == "recv"], f"{path.name}:{loop.lineno}"


class _Script:
    """A stand-in for a ServerLink that hands out prepared requests, for the peers interface alone."""

    def __init__(self, clients: list[str], script: list[tuple[str, Message]]) -> None:
        self.clients, self.script, self.replies = clients, list(script), []
        self.round = 1

    def recv(self, *, expect: tuple[str, ...], pump=None) -> tuple[str, Message]:
        peer, msg = self.script.pop(0)
        if msg.kind not in expect:
            raise ProtocolError(f"{peer} sent {msg.kind!r}")
        return peer, msg

    def reply(self, peer: str, msg: Message) -> None:
        self.replies.append((peer, msg.kind))


def test_gather_serves_other_kinds_meanwhile_and_returns_in_client_order() -> None:
    script = [
        ("b", Message("forward")),
        ("b", Message("weights", meta={"n": 2})),
        ("a", Message("forward")),
        ("a", Message("weights", meta={"n": 1})),
    ]
    link = _Script(["a", "b"], script)
    clients = Clients(link)  # type: ignore[arg-type]
    served: list[str] = []
    got = clients.gather("weights", on={"forward": lambda peer, msg: served.append(peer)})
    assert list(got) == ["a", "b"] and served == ["b", "a"]
    clients.reply_all(lambda peer: Message("weights", meta={"to": peer}))
    assert link.replies == [("a", "weights"), ("b", "weights")]


def test_gather_refuses_a_second_message_of_the_kind_from_one_client() -> None:
    script = [("a", Message("weights")), ("a", Message("weights"))]
    with pytest.raises(ProtocolError, match="a sent 'weights' twice"):
        Clients(_Script(["a", "b"], script)).gather("weights")  # type: ignore[arg-type]


def test_a_member_sending_an_undeclared_kind_is_rejected_and_the_server_goes_on(member_thread) -> None:
    kinds = RUNTIME_KINDS | {"forward"}
    server = ServerLink(ZmqServerTransport("tcp://127.0.0.1:*", max_bytes=2**20), timeout=20, kinds=kinds)
    told: list[str] = []

    def member(link: ClientLink) -> None:
        link.request(Message("hello"), expect=("ack",))
        with pytest.raises(RemoteError) as refused:
            link.request(Message("exec"))
        told.append(str(refused.value))
        link.request(Message("forward"), expect=("ack",))

    try:
        with member_thread(server.transport.address, "member", member) as errors:
            peer, _ = server.recv(expect=("hello",))
            server.register(peer)
            server.reply(peer, Message("ack"))
            peer, msg = server.recv()  # the undeclared kind is answered with an error and skipped
            assert msg.kind == "forward"
            server.reply(peer, Message("ack"))
    finally:
        server.close()
    assert not errors, errors
    assert server.stats.rejected == 1
    assert told and "unknown message kind 'exec'" in told[0]


def test_a_checkpoint_that_left_options_to_their_defaults_still_resumes(tmp_path: Path) -> None:
    """Runs from before options were declared recorded none; the defaults they ran with are the same."""
    import torch

    from splitfed.config import RunConfig
    from splitfed.runtime.server import load_checkpoint

    spec = registry.get("sflv2")
    older = RunConfig(protocol="sflv2", clients=2, epochs=2)
    torch.save({"round": 1, "config": older.to_dict()}, tmp_path / "checkpoint.pt")
    filled = older.replace(epochs=4, options=spec.option_values())
    assert load_checkpoint(tmp_path, filled, spec)["round"] == 1
    with pytest.raises(ConfigError, match="trained with"):
        load_checkpoint(tmp_path, filled.replace(options=spec.option_values(order="interleaved")), spec)
