"""Strangers for the fuzz test and ``benchmarks/fuzz_server.py``: raw ZeroMQ peers that attack a server.

They speak ZeroMQ directly (unfinished multipart messages, duplicate identities, huge frame
counts), below any transport of ours, so they live apart from :mod:`splitfed.testing`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class Stranger:
    """A peer that was never a member of the run, sending malformed and hostile messages.

    Used by the fuzz test and ``benchmarks/fuzz_server.py``. Each call of :meth:`attack`
    sends one message picked by a seeded RNG from: random bytes, truncated, oversized and
    non-object headers, shape/length mismatches, huge frame counts, unfinished multipart
    messages (the sender disconnects halfway), well-formed kinds in the wrong phase, a
    ``hello`` after the join phase, a hello that claims a joined client's name, and
    messages sent just before disconnecting. Some sockets never read their answers.
    """

    def __init__(self, address: str, seed: int, members: list[str]) -> None:
        import random

        import zmq

        self.address, self.members = address, members
        self.rng = random.Random(seed)
        self.ctx = zmq.Context()
        self.sent = 0
        self._socks: list[Any] = []

    def _socket(self, identity: bytes | None = None) -> Any:
        import zmq

        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 100)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        sock.connect(self.address)
        return sock

    def attack(self) -> None:
        import json

        from splitfed import __version__
        from splitfed.wire import Message, encode

        rng = self.rng
        if not self._socks or rng.random() < 0.05:
            self._socks.append(self._socket(f"stranger-{rng.randrange(1 << 30)}".encode()))
            self._socks = self._socks[-8:]
        sock = rng.choice(self._socks)
        header = json.loads(bytes(encode(Message("forward", tensors={"acts": _ones(4)}))[0]))
        choice = rng.randrange(12)
        if choice == 0:
            frames = [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
        elif choice == 1:
            text = json.dumps(header).encode()
            frames = [text[: rng.randrange(1, len(text))]]
        elif choice == 2:
            frames = [b'{"v": 1, "kind": "forward", "meta": "' + b"x" * (1024 * 1024 + 10) + b'"}']
        elif choice == 3:
            frames = [json.dumps(rng.choice([[], 3, "hello", None])).encode()]
        elif choice == 4:
            header["tensors"][0]["shape"] = [rng.randrange(1, 1 << 20)]
            frames = [json.dumps(header).encode(), b"\0" * 16]
        elif choice == 5:
            frames = [json.dumps(header).encode()] + [b""] * rng.randrange(1_025, 20_000)
        elif choice == 6:  # unfinished multipart: the first part, then the sender vanishes
            import zmq

            lone = self._socket()
            lone.send(json.dumps(header).encode(), zmq.SNDMORE)
            lone.close(0)
            self.sent += 1
            return
        elif choice == 7:
            kind = rng.choice(["forward", "weights", "eval", "eval_done", "ready", "turn", "pull", "ack", "error"])
            frames = encode(Message(kind, meta={"n": 1}, sender=rng.choice(self.members), id=rng.randrange(1, 99)))
        elif choice == 8:
            frames = encode(Message("hello", meta={"version": __version__}, id=1))
        elif choice == 9:  # a joined client's name: the server transport refuses a second connection under it
            twin = self._socket(rng.choice(self.members).encode())
            twin.send_multipart(encode(Message("forward", tensors={"acts": _ones(4)}, id=10**6)))
            twin.close(0)
            self.sent += 1
            return
        elif choice == 10:  # send, then disconnect before the server answers
            hit = self._socket()
            hit.send_multipart(encode(Message("eval_done", id=rng.randrange(1, 99))))
            hit.close(0)
            self.sent += 1
            return
        else:
            frames = [json.dumps({**header, "v": 99}).encode(), b"\0" * 16]
        sock.send_multipart([bytes(f) for f in frames])
        self.sent += 1

    def close(self) -> None:
        for sock in self._socks:
            sock.close(0)
        self.ctx.term()


def _ones(n: int) -> Any:
    import torch

    return torch.ones(n)


def run_with_strangers(
    out: Path, *, epochs: int, seed: int = 2, attack_seed: int | None = 0, pause: float = 0.001
) -> dict[str, Any]:
    """One real sflv1 run (``splitfed server`` + 2 ``splitfed client`` processes over tcp loopback),
    with a :class:`Stranger` attacking the server from the end of the join to the end of the run
    (none when ``attack_seed`` is None). Returns the summary, the strangers' message count and the
    server's peak resident memory (MB)."""
    import json
    import os
    import subprocess
    import sys
    import time

    from splitfed.runtime.launcher import free_tcp_address

    address = free_tcp_address()
    exe = [os.path.join(os.path.dirname(sys.executable), "splitfed")]
    server = subprocess.Popen(
        [*exe, "server", "sflv1", "--clients", "2", "--epochs", str(epochs), "--seed", str(seed)]
        + ["--timeout", "30", "--address", address, "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients = [
        subprocess.Popen(
            [*exe, "client", "--server", address, "--name", f"client-{i}", "--shard", "auto"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    stranger, stop = None, threading.Event()
    try:
        deadline = time.monotonic() + 120
        config = out / "config.json"
        while "client_data" not in (config.read_text() if config.exists() else ""):  # joined
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"the run did not start: {server.stderr.read() if server.poll() else ''}")
            time.sleep(0.05)
        if attack_seed is not None:
            stranger = Stranger(address, seed=attack_seed, members=["client-0", "client-1"])

            def attack() -> None:
                while not stop.is_set():
                    stranger.attack()
                    time.sleep(pause)

            threading.Thread(target=attack, daemon=True).start()
        peak = 0.0
        while server.poll() is None:
            peak = max(peak, _peak_rss_mb(server.pid))
            time.sleep(0.1)
        _, err = server.communicate()
        if server.returncode != 0:
            raise RuntimeError(f"the server failed (exit {server.returncode}): {err}")
        summary = json.loads((out / "summary.json").read_text())
    finally:
        stop.set()
        if stranger is not None:
            time.sleep(0.1)
            stranger.close()
        for p in (server, *clients):
            if p.poll() is None:
                p.kill()
            p.wait()
    return {"summary": summary, "sent": stranger.sent if stranger else 0, "peak_mb": peak}


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
