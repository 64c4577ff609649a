"""SFLv1 over ZeroMQ processes vs the same computation in one process with no transport.

    python benchmarks/transport_overhead.py [--clients 2] [--epochs 5] [--model cnn] [--data digits]

Prints seconds per epoch for each, their ratio, and bytes on the wire against the raw
bytes of the tensors sent. Both runs use the same data, seed, batches and model.
Not a test: speed figures go into the issue notes, not into assertions.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from splitfed.aggregation import fedavg
from splitfed.bench import run_one
from splitfed.data.shards import batch_order, client_shard
from splitfed.models import build_model, resolve_cut, split_model


def in_process(args: argparse.Namespace) -> float:
    """SFLv1's maths with no transport at all: seconds per epoch."""
    torch.set_num_threads(1)
    shards = [client_shard(args.data, clients=args.clients, client=i, seed=args.seed) for i in range(args.clients)]
    full = build_model(args.model, shards[0].shape, len(shards[0].classes), args.seed)
    cut = resolve_cut(args.model, None, full)
    halves = [
        split_model(build_model(args.model, shards[0].shape, len(shards[0].classes), args.seed), cut) for _ in shards
    ]
    opts = [(torch.optim.Adam(c.parameters(), lr=1e-3), torch.optim.Adam(s.parameters(), lr=1e-3)) for c, s in halves]
    n = [len(s.train_y) for s in shards]
    times = []
    for rnd in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        orders = [batch_order(n[i], 32, seed=args.seed, client=i, round=rnd, epoch=0) for i in range(args.clients)]
        for step in range(max(map(len, orders))):
            for i, ((client, server), (oc, os_)) in enumerate(zip(halves, opts, strict=True)):
                if step >= len(orders[i]):
                    continue
                rows = orders[i][step]
                acts = client(shards[i].train_x[rows])
                sent = acts.detach().requires_grad_(True)
                loss = F.cross_entropy(server(sent), shards[i].train_y[rows])
                os_.zero_grad()
                loss.backward()
                os_.step()
                oc.zero_grad()
                acts.backward(sent.grad)
                oc.step()
        for k in (0, 1):
            avg = fedavg([h[k].state_dict() for h in halves], n)
            for h in halves:
                h[k].load_state_dict(avg)
        with torch.no_grad():
            for i, (client, server) in enumerate(halves):
                server(client(shards[i].test_x)).argmax(1)
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def over_zeromq(args: argparse.Namespace, out: Path) -> dict:
    common = [
        "--clients",
        str(args.clients),
        "--epochs",
        str(args.epochs),
        "--model",
        args.model,
        "--data",
        args.data,
        "--checkpoint-every",
        "0",
    ]
    run = run_one("sflv1", args.seed, out, common, timeout=3600)
    if run.summary is None:
        raise SystemExit(f"the ZeroMQ run failed: {run.error}")
    return run.summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--model", default="cnn")
    p.add_argument("--data", default="digits")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        s = over_zeromq(args, Path(tmp) / "run")
    local = in_process(args)
    zmq_epoch = s["seconds_per_epoch"]
    print(f"SFLv1, {args.clients} clients, {args.model} on {args.data}, {args.epochs} epochs")
    print(f"  one process, no transport : {local:.3f} s/epoch")
    print(f"  ZeroMQ processes (tcp)    : {zmq_epoch:.3f} s/epoch  (test accuracy {s['test_accuracy']:.4f})")
    print(f"  ratio                     : {zmq_epoch / local:.2f}x")
    wire = s["bytes_sent"] + s["bytes_received"]
    raw = s["tensor_bytes_sent"] + s["tensor_bytes_received"]
    print(
        f"  bytes on the wire         : {wire / 1e6:.2f} MB  (raw tensor bytes {raw / 1e6:.2f} MB, "
        f"overhead {100 * (wire - raw) / raw:.2f}%)"
    )


if __name__ == "__main__":
    main()
