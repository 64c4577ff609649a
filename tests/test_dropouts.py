"""Members lost, frozen and back, with real processes (the fault-injection harness, splitfed.faults)."""

from __future__ import annotations

import pytest
import torch

from splitfed.faults import Fault, Federation, schedule


def test_the_schedule_is_seeded_and_never_strikes_a_client_that_is_down() -> None:
    faults = schedule(8, 30, share=0.4, seed=0)
    assert faults == schedule(8, 30, share=0.4, seed=0) and faults != schedule(8, 30, share=0.4, seed=1)
    assert all(2 <= f.round < f.back == f.round + 2 <= 30 and f.kind in ("kill", "freeze") for f in faults)
    for f in faults:
        assert not [g for g in faults if g is not f and g.client == f.client and g.round <= f.round < g.back]


@pytest.mark.parametrize(("protocol", "kind"), [("sflv1", "kill"), ("sflv2", "freeze")])
def test_a_lost_client_is_dropped_from_its_round_and_rejoins_later(splitfed_cmd, tmp_path, protocol, kind) -> None:
    """Every client trains every round; client-1 is struck in round 2 and started again in round 3. The run
    goes on with the two others (--min-clients 2) and takes client-1 back at a round boundary."""
    args = ["--epochs", "10", "--min-clients", "2", "--timeout", "4", "--join-timeout", "120"]
    fed = Federation(splitfed_cmd, protocol, 3, tmp_path / "run", args)
    assert fed.run([Fault(2, "client-1", kind, 3)], deadline=600) == 0
    rows, summary = fed.metrics(), fed.summary()
    assert summary["status"] == "completed" and summary["rounds_done"] == 10
    assert rows[0]["participants"] == ["client-0", "client-1", "client-2"]
    assert rows[1]["lost"] == ["client-1"]  # dropped from round 2, which the others finished
    back = next(r["round"] for r in rows if r.get("joined") == ["client-1"])
    assert all(r["participants"] == ["client-0", "client-2"] for r in rows[2 : back - 1])
    assert all(r["participants"] == ["client-0", "client-1", "client-2"] for r in rows[back - 1 :])
    assert summary["test_accuracy"] > 0.8


def test_a_member_back_within_rejoin_timeout_lets_the_run_go_on(splitfed_cmd, tmp_path) -> None:
    """Two clients, --min-clients 2: client-0 is killed in round 3 and started again when round 4 begins. Round 3
    finishes with client-1 alone (flagged), the server waits for a member, client-0 rejoins, and the run goes on."""
    args = ["--epochs", "6", "--min-clients", "2", "--timeout", "4", "--rejoin-timeout", "300", "--join-timeout", "120"]
    fed = Federation(splitfed_cmd, "fedavg", 2, tmp_path / "run", args)
    assert fed.run([Fault(3, "client-0", "kill", 4)], deadline=600) == 0
    rows, summary = fed.metrics(), fed.summary()
    assert summary["status"] == "completed" and summary["rounds_done"] == 6
    assert rows[2]["lost"] == ["client-0"] and rows[2]["below_min_clients"] is True
    assert rows[3]["joined"] == ["client-0"]  # it came back before round 4, which waited for it
    assert all(r["participants"] == ["client-0", "client-1"] for r in rows[3:])
    assert all("below_min_clients" not in r for r in rows[3:])
    assert "waiting up to 300 s" in (tmp_path / "run" / "logs" / "server.log").read_text()


def test_fewer_than_min_clients_past_rejoin_timeout_fails_keeping_the_checkpoint(splitfed_cmd, tmp_path) -> None:
    out = tmp_path / "run"
    args = ["--epochs", "20", "--min-clients", "2", "--timeout", "4", "--rejoin-timeout", "3"]
    fed = Federation(splitfed_cmd, "fedavg", 2, out, args)
    assert fed.run([Fault(3, "client-0", "kill", 30)], deadline=600) == 1
    summary = fed.summary()
    assert summary["status"] == "failed" and summary["rounds_done"] == 3  # round 3 finished with client-1 alone
    assert "fewer than --min-clients 2" in summary["error"] and "--rejoin-timeout 3 s" in summary["error"]
    assert "--resume" in summary["error"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["round"] == 3
    assert "Traceback" not in (out / "logs" / "server.log").read_text()
