"""Records that do not mislead (issue 13, part 4): versions, the clients' own data, a waiting client."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
from pathlib import Path

import pytest
import torch

import splitfed
from splitfed.config import RunConfig
from splitfed.errors import SplitFedError
from splitfed.protocol import DataRequest
from splitfed.runtime.client import run_client
from splitfed.testing import run_in_threads
from splitfed.versions import git_commit

REPO = Path(__file__).resolve().parents[1]


def test_config_and_summary_record_the_versions_and_what_the_clients_hold(tmp_path: Path) -> None:
    # the server's own --data names a folder it never reads; the clients hold the built-in digits
    config = RunConfig(protocol="sflv1", clients=2, epochs=1, seed=2, timeout=30, data="/nowhere/server-default")
    held = DataRequest(source="digits", test_fraction=0.25, seed=2)
    commit = (git_commit(REPO) or "").removesuffix("+dirty")  # (an edit during the test may change dirtiness)
    summary = json.loads(run_in_threads(config, tmp_path, data=held).read_text())
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["data"] == "digits"
    reports = recorded["data_by_client"]
    assert sorted(reports) == ["client-0", "client-1"]
    assert all(r["source"] == "digits" and r["test_fraction"] == 0.25 for r in reports.values())
    assert all(r["classes"] == [str(c) for c in range(10)] for r in reports.values())
    assert sum(r["n_train"] + r["n_test"] for r in reports.values()) == 1797
    for record in (recorded["versions"], summary["versions"]):
        assert record["splitfed"] == splitfed.__version__ and record["python"] == platform.python_version()
        assert torch.__version__.startswith(record["torch"])
        assert (record["git_commit"] or "").removesuffix("+dirty") == commit
    assert RunConfig.from_file(tmp_path / "config.json").data == "digits"  # still a config a resume can read


def test_git_commit_is_the_checkout_head_or_none_outside_git(tmp_path: Path) -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert git_commit(REPO).removesuffix("+dirty") == head.stdout.strip()
    assert git_commit(tmp_path) is None


def test_a_waiting_client_says_that_it_waits_and_where(caplog: pytest.LogCaptureFixture) -> None:
    address = "memory://nobody-listens-here"
    with caplog.at_level(logging.INFO, logger="splitfed.runtime.client"), pytest.raises(SplitFedError):
        run_client(address, "client-w", DataRequest(), timeout=0.3, join_timeout=0.3)
    assert f"client-w: waiting for the server at {address}" in caplog.text


def test_tensorboard_writes_each_rounds_scalars_next_to_the_metrics(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra (bash scripts/setup.sh installs it)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = RunConfig(protocol="sflv1", clients=2, epochs=2, seed=2, timeout=30, tensorboard=True)
    run_in_threads(config, tmp_path)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1  # in the run folder, beside metrics.jsonl
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("loss/test", "test_loss"), ("macro_f1/test", "test_macro_f1"), ("bytes/up", "bytes_sent")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert {"accuracy/test", "accuracy/train", "seconds/round", "seconds/training"} <= set(events.Tags()["scalars"])


def test_without_the_flag_no_event_file_is_written(tmp_path: Path) -> None:
    run_in_threads(RunConfig(protocol="sflv1", clients=2, epochs=1, seed=2, timeout=30), tmp_path)
    assert not list(tmp_path.glob("events.out.tfevents.*"))
