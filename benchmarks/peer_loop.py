"""The peer of benchmarks/peer_speed.py: SFLv1 in one process, with the original code's control flow.

Written from a description of that code's control flow (see peer_speed.py), not copied.
Same data shards, batch orders and model halves (``--model``, default ``auto`` as splitfed's) as
``splitfed run sflv1``; all cores, float32, on ``--device``.
Leaves OUT/marks.json: the time of the first batch, the end of the rounds and the final accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.data.shards import batch_order, client_shard
from splitfed.models import build_model, resolve_cut, split_model


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Unweighted mean of state dicts, as the original code averages."""
    return {k: sum(s[k] for s in states) / len(states) for k in states[0]}


@torch.no_grad()
def accuracy(client, server, x: torch.Tensor, y: torch.Tensor) -> float:
    client.eval(), server.eval()
    correct = sum(
        int((server(client(x[i : i + 256])).argmax(1) == y[i : i + 256]).sum()) for i in range(0, len(y), 256)
    )
    client.train(), server.train()
    return correct / len(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="auto", help="splitfed's --model: the same halves as splitfed run builds")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    shards = [client_shard(args.data, clients=args.clients, client=i, seed=args.seed) for i in range(args.clients)]
    full = build_model(args.model, shards[0].shape, len(shards[0].classes), args.seed).to(device)
    client_glob, server_glob = split_model(full, resolve_cut(args.model, None, full))
    server_copies = [copy.deepcopy(server_glob) for _ in shards]
    marks: dict = {"rounds": args.epochs}
    rng = np.random.default_rng(args.seed)
    for rnd in range(1, args.epochs + 1):
        client_states = []
        for c in rng.permutation(args.clients):
            shard, half = shards[c], copy.deepcopy(client_glob)
            opt = torch.optim.Adam(half.parameters(), lr=args.lr)  # once per client per round
            for step, rows in enumerate(
                batch_order(len(shard.train_y), args.batch_size, seed=args.seed, client=int(c), round=rnd, epoch=0)
            ):
                marks.setdefault("first_batch", time.time())
                x, y = shard.train_batch(rows, seed=args.seed, client=int(c), round=rnd, epoch=0, step=step)
                x, y = x.to(device), y.to(device)
                acts = half(x)
                server = copy.deepcopy(server_copies[c])  # per batch: a copy and a new Adam
                server_opt = torch.optim.Adam(server.parameters(), lr=args.lr)
                cut = acts.detach().requires_grad_(True)
                loss = F.cross_entropy(server(cut), y)
                server_opt.zero_grad()
                loss.backward()
                server_opt.step()
                server_copies[c].load_state_dict(server.state_dict())
                opt.zero_grad()
                acts.backward(cut.grad)
                opt.step()
            client_states.append(copy.deepcopy(half.state_dict()))
            accuracy(half, server_copies[c], *(t.to(device) for t in shard.eval_set("test")))  # after each client
        server_avg = average([s.state_dict() for s in server_copies])
        for s in server_copies:
            s.load_state_dict(server_avg)
        client_glob.load_state_dict(average(client_states))
    marks["rounds_end"] = time.time()
    xs = torch.cat([s.eval_set("test")[0] for s in shards])
    ys = torch.cat([s.eval_set("test")[1] for s in shards])
    marks["accuracy"] = accuracy(client_glob, server_copies[0], xs.to(device), ys.to(device))
    (args.out / "marks.json").write_text(json.dumps(marks))


if __name__ == "__main__":
    main()
