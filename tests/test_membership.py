"""Partial participation: who trains each round, recorded, seeded; what the servers keep for them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from splitfed.protocols.sflv1 import SFLv1Server

from splitfed.config import RunConfig
from splitfed.errors import ConfigError
from splitfed.runtime.membership import sample
from splitfed.testing import run_in_threads

NAMES = [f"client-{i}" for i in range(8)]


def test_sampling_is_seeded_sized_and_in_client_order() -> None:
    picks = [sample(NAMES, 3, seed=0, rnd=r) for r in range(1, 11)]
    assert picks == [sample(NAMES, 3, seed=0, rnd=r) for r in range(1, 11)]  # the same seed, the same rounds
    assert all(len(p) == 3 and set(p) <= set(NAMES) and p == sorted(p, key=NAMES.index) for p in picks)
    assert len({tuple(p) for p in picks}) > 3  # rounds differ
    assert picks != [sample(NAMES, 3, seed=1, rnd=r) for r in range(1, 11)]
    assert sample(NAMES[:2], 3, seed=0, rnd=1) == NAMES[:2]  # fewer connected than K: all of them


def test_clients_per_round_and_min_clients_are_checked() -> None:
    assert RunConfig(protocol="sflv1", clients=5, clients_per_round=0.5).per_round == 3  # a fraction rounds up
    assert RunConfig(protocol="sflv1", clients=5).per_round == 5
    assert RunConfig(protocol="sflv1", clients=5, clients_per_round=2, min_clients=2).per_round == 2
    with pytest.raises(ConfigError, match="--clients-per-round must be"):
        RunConfig(protocol="sflv1", clients=5, clients_per_round=6)
    with pytest.raises(ConfigError, match="--clients-per-round must be"):
        RunConfig(protocol="sflv1", clients=5, clients_per_round=2.5)
    with pytest.raises(ConfigError, match="--min-clients must be .* per round \\(2\\)"):
        RunConfig(protocol="sflv1", clients=5, clients_per_round=2, min_clients=3)


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2", "fedavg", "sl"])
def test_each_round_trains_the_sampled_clients_and_records_them(tmp_path: Path, protocol: str) -> None:
    config = RunConfig(protocol=protocol, clients=4, epochs=3, clients_per_round=2, min_clients=1, timeout=30)
    runs = []
    for name in ("a", "b"):
        run_in_threads(config, tmp_path / name)
        runs.append([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    members = [f"client-{i}" for i in range(4)]
    for row in runs[0]:
        assert row["participants"] == sample(members, 2, seed=0, rnd=row["round"])
        assert "lost" not in row and "joined" not in row
    assert [r["test_accuracy"] for r in runs[0]] == [r["test_accuracy"] for r in runs[1]]  # seeded: it repeats
    assert runs[0][-1]["test_accuracy"] > 0.5  # it learns; every member evaluates with the global weights


def test_every_client_trains_every_round_by_default(tmp_path: Path) -> None:
    run_in_threads(RunConfig(protocol="sflv1", clients=3, epochs=2), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["participants"] for r in rows] == [["client-0", "client-1", "client-2"]] * 2


def _sflv1_server(clients: int) -> SFLv1Server:
    """A real SFLv1 server role, set up from the ``ready`` descriptions of ``clients`` digits clients."""
    role = SFLv1Server(RunConfig(protocol="sflv1", clients=clients, clients_per_round=2), torch.device("cpu"))
    ready = {"n_train": 10, "n_test": 2, "classes": list("0123456789"), "shape": [1, 8, 8]}
    role.setup(None, {f"client-{i}": dict(ready) for i in range(clients)})
    return role


def test_sflv1_keeps_server_copies_for_the_rounds_clients_only() -> None:
    role = _sflv1_server(6)
    role.keep_copies_for(["client-1", "client-4"], 1)
    assert sorted(role.halves) == sorted(role.opts) == ["client-1", "client-4"]
    kept = role.halves["client-1"]  # the same copy (and optimizer) lives on while its client is sampled
    with torch.no_grad():
        for p in role.halves["client-4"].parameters():
            p.add_(1.0)
    role.average_server_copies(["client-1", "client-4"])
    role.keep_copies_for(["client-1", "client-5"], 2)
    assert sorted(role.halves) == ["client-1", "client-5"] and role.halves["client-1"] is kept
    for a, b in zip(
        role.halves["client-1"].state_dict().values(), role.halves["client-5"].state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)  # the newcomer's copy starts from the average
    role.discard_copy("client-5")  # a lost client's copy goes with what it learnt
    assert list(role.halves) == ["client-1"]


def test_a_resume_gives_each_saved_optimizer_back_to_its_own_clients_copy() -> None:
    role = _sflv1_server(6)
    role.keep_copies_for(["client-1", "client-4"], 1)
    role.opts["client-4"].param_groups[0]["lr"] = 0.123  # something of client-4's own optimizer state
    resumed = SFLv1Server(role.config, torch.device("cpu"))
    resumed.resume = role.checkpoint()
    ready = {"n_train": 10, "n_test": 2, "classes": list("0123456789"), "shape": [1, 8, 8]}
    resumed.setup(None, {f"client-{i}": dict(ready) for i in range(6)})
    assert resumed.opts["client-4"].param_groups[0]["lr"] == 0.123  # not client-1's copy's, nor client-0's
    assert resumed.opts["client-0"].param_groups[0]["lr"] == role.config.lr


def test_protocols_that_need_every_party_refuse_partial_rounds(splitfed_cmd, tmp_path: Path) -> None:
    res = subprocess.run(
        [*splitfed_cmd, "run", "pyvertical", "--min-clients", "1", "--epochs", "1", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "pyvertical trains with every client in every round" in res.stderr and "Traceback" not in res.stderr
