"""Shared fixtures: a tiny model, a free loopback address, the splitfed command."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# cuBLAS is deterministic only with this set before it starts (tests/test_gpu.py asks for determinism)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import splitfed  # noqa: F401  # isort: skip - before torch: it sets OMP_WAIT_POLICY, read as torch loads
import torch  # isort: skip

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def splitfed_cmd() -> list[str]:
    """The installed console script, as a user runs it."""
    exe = shutil.which("splitfed", path=os.path.dirname(sys.executable)) or shutil.which("splitfed")
    assert exe, "the splitfed console script is not installed: run bash scripts/setup.sh"
    return [exe]


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def run_protocol(splitfed_cmd, tmp_path: Path):
    """Run ``splitfed run PROTOCOL ARGS... --quiet`` as a user would; return (summary, run folder)."""
    import json
    import subprocess

    def _run(protocol: str, *args: str) -> tuple[dict, Path]:
        args = list(args)
        suffix = ""
        if "--out-suffix" in args:  # a second run of the same protocol in one test
            i = args.index("--out-suffix")
            suffix = "-" + args[i + 1]
            del args[i : i + 2]
        out = tmp_path / f"run-{protocol}{suffix}"
        res = subprocess.run(
            [*splitfed_cmd, "run", protocol, *args, "--out", str(out), "--quiet"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stderr
        return json.loads((out / "summary.json").read_text()), out

    return _run


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_server(splitfed_cmd, tmp_path: Path):
    """Start ``splitfed server sflv1`` on a free loopback port; killed when the test ends.

    Returns (process, address, run folder).
    """
    import subprocess

    started: list[subprocess.Popen] = []

    def _start(*args: str, clients: int = 1, epochs: int = 1) -> tuple[subprocess.Popen, str, Path]:
        address, out = f"tcp://127.0.0.1:{free_port()}", tmp_path / "run"
        cmd = [
            *splitfed_cmd,
            "server",
            "sflv1",
            "--clients",
            str(clients),
            "--epochs",
            str(epochs),
            "--address",
            address,
            "--out",
            str(out),
            "--quiet",
            *args,
        ]
        started.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return started[-1], address, out

    yield _start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def member_thread():
    """``with member_thread(address, name, body) as errors:`` runs ``body(link)`` for a client in a thread
    (its ClientLink closed after), while the test plays the server; ``errors`` holds what it raised."""
    import threading
    from contextlib import contextmanager

    from splitfed.transport.link import ClientLink
    from splitfed.transport.zeromq import ZmqClientTransport

    @contextmanager
    def run(address: str, name: str, body, timeout: float = 20):
        errors: list[BaseException] = []

        def member() -> None:
            link = ClientLink(ZmqClientTransport(address, name, max_bytes=2**26), timeout=timeout)
            try:
                body(link)
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append(exc)
            finally:
                link.close()

        thread = threading.Thread(target=member)
        thread.start()
        try:
            yield errors
        finally:
            thread.join(timeout)

    return run
