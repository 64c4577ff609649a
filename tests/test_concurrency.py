"""SFLv1's server steps the clients' server-half copies side by side, with the sequential results."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from splitfed.protocols.concurrent_steps import Lockstep, Overlapped, run_concurrently, step_pool
from splitfed.protocols.sfl_server import SFLServerBase
from splitfed.protocols.sflv1 import SFLv1Server

from splitfed.config import RunConfig
from splitfed.devices import set_threads
from splitfed.errors import ProtocolError
from splitfed.protocol import ProtocolSpec
from splitfed.registry import get
from splitfed.testing import run_in_threads
from splitfed.wire import Message


def test_jobs_run_at_the_same_time_and_keep_their_order() -> None:
    """A barrier that two jobs must reach together: sequential running would break it."""
    meet = threading.Barrier(2, timeout=20)
    pool = step_pool(clients=2, threads_per_step=1, cores=2)
    assert pool is not None

    def job(n: int) -> int:
        meet.wait()
        return n

    assert run_concurrently([lambda: job(1), lambda: job(2)], pool) == [1, 2]
    assert step_pool(clients=2, threads_per_step=2, cores=2) is None  # no room for a second step: none
    assert step_pool(clients=4, threads_per_step=1, cores=2)._max_workers == 2  # never more workers than cores


def test_lockstep_waits_for_every_client_still_sending() -> None:
    served: list[tuple[str, int]] = []
    together = Lockstep(
        ["a", "b", "c"],
        compute=lambda peer, msg: msg.step * 10,
        finish=lambda peer, msg, result: served.append((peer, result)),
        pool=None,
    )
    together.add("b", Message("forward", step=1))
    together.add("a", Message("forward", step=2))
    assert served == []  # c has not sent yet
    together.add("c", Message("forward", step=3))
    assert served == [("a", 20), ("b", 10), ("c", 30)]  # client order, whatever the arrival order
    together.leave("c")  # c is done; a and b go on
    together.add("a", Message("forward", step=4))
    assert served[3:] == []
    together.leave("b")  # b finished instead of sending: a is served alone
    assert served[3:] == [("a", 40)]


def test_a_lost_client_leaves_the_lockstep_unanswered_and_releases_the_others() -> None:
    served: list[tuple[str, int]] = []
    together = Lockstep(
        ["a", "b", "c"],
        compute=lambda peer, msg: msg.step,
        finish=lambda peer, msg, result: served.append((peer, result)),
        pool=None,
    )
    together.add("a", Message("forward", step=1))
    together.add("c", Message("forward", step=3))
    together.drop("c")  # c was lost with a batch held: nobody answers it, and a no longer waits for it
    assert served == []  # b still trains
    together.add("b", Message("forward", step=2))
    assert served == [("a", 1), ("b", 2)]


def test_overlapped_answers_each_request_when_its_step_is_done() -> None:
    """a's step cannot finish until b has been answered: a server that waited for every step (or answered
    in client order) would never answer; Overlapped answers b first, then a. A lost client's step,
    even a failed one, goes unanswered, and close() waits for the steps still under way."""
    b_answered, woken = threading.Event(), threading.Semaphore(0)
    answered: list[str] = []

    def compute(peer: str, msg: Message) -> str:
        if peer == "a":
            assert b_answered.wait(20)
        if peer == "c":
            raise RuntimeError("c's step failed after c was lost")
        return peer

    def finish(peer: str, msg: Message, result: str) -> None:
        answered.append(result)
        if peer == "b":
            b_answered.set()

    pool = step_pool(clients=3, threads_per_step=1, cores=3)
    together = Overlapped(compute, finish, pool, woken.release)
    together.add("a", Message("forward", step=1))
    together.add("b", Message("forward", step=1))
    together.add("c", Message("forward", step=1))
    together.drop("c")
    while together.pump():  # the serving thread's loop: pump, then wait to be woken
        assert woken.acquire(timeout=20)
    assert answered == ["b", "a"]
    together.add("b", Message("forward", step=2))
    with pytest.raises(ProtocolError, match="before its previous request was answered"):
        together.add("b", Message("forward", step=3))  # a second step of b's copy while one runs: refused
    together.close()
    assert together.running == {}


def _sflv1(tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[dict], set[str]]:
    """A 3-client SFLv1 run with ``workers`` step workers; its checkpoint, metrics and the threads that stepped."""
    monkeypatch.setattr(SFLv1Server, "step_workers", workers)
    stepped_in: set[str] = set()
    original = SFLServerBase.step_forward  # the unwrapped step, however many runs wrapped it

    def step_forward(self, peer, msg):
        stepped_in.add(threading.current_thread().name)
        return original(self, peer, msg)

    monkeypatch.setattr(SFLv1Server, "step_forward", step_forward)
    config = RunConfig(protocol="sflv1", clients=3, epochs=2, batch_size=32, lr=3e-3, seed=5, timeout=30)
    run_in_threads(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return torch.load(tmp_path / "checkpoint.pt", weights_only=True), rows, stepped_in


def test_concurrent_server_copies_equal_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three clients, Adam, two rounds: stepping the copies side by side changes no number (1e-6)."""
    seq, seq_rows, seq_threads = _sflv1(tmp_path / "sequential", 1, monkeypatch)
    par, par_rows, par_threads = _sflv1(tmp_path / "concurrent", 3, monkeypatch)
    assert not any(name.startswith("step") for name in seq_threads), seq_threads  # served where they arrived
    assert len({name for name in par_threads if name.startswith("step")}) == 3  # three workers stepped copies
    for part in ("client_half", "server_half"):
        for k, v in seq[part].items():
            assert torch.allclose(par[part][k], v, atol=1e-6, rtol=0), (part, k)
    for a, b in zip(seq["server_optimizers"], par["server_optimizers"], strict=True):
        for key, state in a["state"].items():
            for name, t in state.items():
                assert torch.allclose(b["state"][key][name], t, atol=1e-6, rtol=0), (key, name)
    for a, b in zip(seq_rows, par_rows, strict=True):
        for key in ("train_accuracy", "test_accuracy", "bytes_sent", "bytes_received"):
            assert a[key] == b[key], key
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-6


def test_threads_go_to_the_parties_busy_at_once() -> None:
    """Cores are shared among the parties that compute together, not among all processes."""
    before = torch.get_num_threads()
    try:
        assert get("sflv1").busy_parties(2) == 2
        assert get("fedavg").busy_parties(3) == 3
        assert get("sflv2").busy_parties(4) == 1  # one client and the server take turns
        assert get("sl").busy_parties(4) == 1
        assert get("centralized").busy_parties(4) == 1
        assert isinstance(get("sflv1"), ProtocolSpec)
        assert set_threads(3, 2) == 3 == torch.get_num_threads()  # an explicit --threads wins
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("model", ["mobilenet", "cnn"])
def test_evaluation_in_chunks_equals_one_pass(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU, test batches go through a model 16 rows at a time (faster: see EVAL_CHUNK); the logits are
    those of one pass over the whole batch."""
    from splitfed.protocols import split_steps

    from splitfed.models import build_model

    net = build_model(model, (1, 32, 48), 5, seed=0).eval()
    x = torch.randn(37, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    rows_seen: list[int] = []
    net.register_forward_pre_hook(lambda _m, args: rows_seen.append(len(args[0])))
    with torch.inference_mode():
        whole = net(x)
        rows_seen.clear()
        chunked = split_steps.infer(net, x)
    assert rows_seen == [16, 16, 5]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(split_steps, "EVAL_CHUNK", 64)
    rows_seen.clear()
    with torch.inference_mode():
        split_steps.infer(net, x)
    assert rows_seen == [37]


def test_a_client_lost_while_its_answer_goes_out_ends_the_wait_for_it() -> None:
    """The pump answers a finished step; if that client is gone, gather stops waiting for it at once (it was
    the last one waited for: nothing else would wake the wait), instead of failing the run after --timeout."""
    import uuid

    from splitfed.peers import Clients
    from splitfed.transport.link import ClientLink, ServerLink
    from splitfed.transport.schemes import client_transport, server_transport

    address = f"memory://lost-in-pump-{uuid.uuid4().hex}"
    link = ServerLink(server_transport(address, max_bytes=1 << 20, send_timeout=0.5), timeout=20.0)
    clients = Clients(link)
    clients.on_lost = lambda peer, exc: link.forget(peer)
    ends = {n: ClientLink(client_transport(address, n, max_bytes=1 << 20), timeout=60) for n in "ab"}
    for name in "ab":
        link.register(name)
    a_gone, b_gathered = threading.Event(), threading.Event()

    def compute(peer: str, msg: Message) -> str:  # a's step: b finishes its round and is gathered, then a dies
        ends["b"].send(Message("weights"))
        assert b_gathered.wait(20)
        ends["a"].transport.close()
        a_gone.set()
        return peer

    lost: list[str] = []
    together = Overlapped(
        compute, lambda p, m, r: clients.reply(p, Message("gradient")), step_pool(2, 1, 2), clients.interrupt
    )
    ends["a"].send(Message("forward"))
    started = time.monotonic()
    try:
        got = clients.gather(
            "weights",
            on={"forward": together.add},
            each=lambda p, m: b_gathered.set(),
            lost=lost.append,
            pump=together.pump,
        )
    finally:
        together.close()
        link.close()
    assert a_gone.is_set() and list(got) == ["b"] and lost == ["a"]
    assert time.monotonic() - started < 15  # not the 20 s --timeout
