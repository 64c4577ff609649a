"""The label attack against label-private SplitFed (--labels client) and its defences: the README's table.

Each setting trains SFLv1 with 2 clients and --labels client on the built-in digits (8x8; or, with
--size 32, the privacy table's digits upscaled to 32x32), for several seeds, then runs
`splitfed attack RUN --labels` (splitfed.attack_run.label_attack_run) on 256 held-out test rows at
the run's first round and at its checkpoint. A spy on the server's transport also keeps every gradient
that really arrived, and the same clustering attack reads the clients' training rows from them: in
round 1, in the last round, and averaged over all rounds (an attacker who links an example's returns
across rounds, which averages fresh noise away). Reported, as means over the seeds: test accuracy; the
gradient attack (held-out rows); the attack on the wire; the server classifying the activations with
its copy of the head (only where heads are averaged through it); the middle's outputs clustered (no
head needed); and the shuffled-label baseline (chance is 0.1).

    python benchmarks/label_defence_table.py --out bench/labels
    python benchmarks/label_defence_table.py --size 32 --out bench/labels32   # the privacy table's 32x32 proxy
    python benchmarks/label_defence_table.py --seeds 0 --only "off;clip 0.1, noise 0.3, local"

Writes OUT/results.md and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

from splitfed.transport.base import ServerTransport

#: name -> protocol options (besides --labels client) of the table's rows
SETTINGS: dict[str, dict] = {
    "off": {},
    "off, local heads": {"heads": "local"},
    "clip 0.1, noise 0.3": {"label_clip": 0.1, "label_noise": 0.3},
    "clip 0.1, noise 0.1, local": {"heads": "local", "label_clip": 0.1, "label_noise": 0.1},
    "clip 0.1, noise 0.3, local": {"heads": "local", "label_clip": 0.1, "label_noise": 0.3},
    "clip 0.1, noise 1, local": {"heads": "local", "label_clip": 0.1, "label_noise": 1.0},
    "clip 0.1, noise 2, local": {"heads": "local", "label_clip": 0.1, "label_noise": 2.0},
    "clip 0.1, noise 3, local": {"heads": "local", "label_clip": 0.1, "label_noise": 3.0},
}
#: the report's figures, per round, that the table averages over seeds
FIGURES = ("accuracy", "linked", "classify", "features", "shuffled", "examples")


class GradientSpy(ServerTransport):
    """The server's transport, keeping every gradient a client returns (``headgrad``) and each client's index."""

    def __init__(self, inner: ServerTransport) -> None:
        self.inner, self.address = inner, inner.address
        self.index: dict = {}
        self.grads: dict = {}  # peer -> the returned gradients, in the order they arrived

    def recv(self, timeout: float):
        from splitfed.wire import decode

        got = self.inner.recv(timeout)
        if got is not None and json.loads(bytes(got[1][0]))["kind"] == "headgrad":
            msg = decode([bytes(f) for f in got[1]])
            self.grads.setdefault(got[0], []).append(msg.tensors["grad"].reshape(len(msg.tensors["grad"]), -1))
        return got

    def send(self, peer, frames, *, block: bool = True) -> bool:
        if json.loads(bytes(frames[0]))["kind"] == "welcome":
            from splitfed.wire import decode

            self.index[peer] = int(decode([bytes(f) for f in frames]).meta["index"])
        return self.inner.send(peer, frames, block=block)

    def close(self) -> None:
        self.inner.close()


def wire_attack(spy: GradientSpy, config, seed: int) -> dict:
    """The clustering attack on the training rows' gradients as they arrived: round 1, the last round, and
    each row's returns summed over the rounds; the mean over clients of each figure."""
    from splitfed.data.shards import batch_order, client_shard
    from splitfed.label_attack import infer_labels

    figures: dict[str, list[float]] = {}
    for peer, grads in spy.grads.items():
        client = spy.index[peer]
        labels = client_shard(config.data, clients=config.clients, client=client, seed=config.seed).train_y
        rounds = [
            batch_order(len(labels), config.batch_size, seed=config.seed, client=client, round=r, epoch=0)
            for r in range(1, config.epochs + 1)
        ]
        per_round = len(rounds[0])
        summed = torch.zeros(len(labels), grads[0].shape[1])
        sent = {}
        for r, order in enumerate(rounds):
            sent[r] = torch.zeros_like(summed)
            for step, rows in enumerate(order):
                sent[r][torch.as_tensor(rows)] = grads[r * per_round + step]
            summed += sent[r]
        for key, z in (("wire_first", sent[0]), ("wire_last", sent[len(rounds) - 1]), ("wire_linked", summed)):
            found = infer_labels(z, labels, 10, seed=seed)
            figures.setdefault(key, []).append(found.accuracy)
            figures.setdefault(f"{key}_shuffled", []).append(found.shuffled)
    return {k: statistics.fmean(v) for k, v in figures.items()}


def train_and_attack(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One run of the setting and the label attacks on it."""
    from splitfed.attack_run import label_attack_run
    from splitfed.config import RunConfig
    from splitfed.testing import run_in_threads

    out = args.out / "runs" / f"{name.replace(' ', '').replace(',', '-')}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)  # this script's own run folder, from an earlier pass
    config = RunConfig(
        protocol="sflv1",
        clients=2,
        epochs=args.epochs,
        data=args.data,
        model="cnn",
        seed=seed,
        options={"labels": "client", **SETTINGS[name]},
    )
    spies: list[GradientSpy] = []
    summary = json.loads(
        run_in_threads(
            config, out, timeout=None, wrap_server=lambda inner: spies.append(GradientSpy(inner)) or spies[-1]
        ).read_text()
    )
    report = label_attack_run(out, victims=args.victims, seed=seed)
    row = {"test_accuracy": summary["test_accuracy"], "chance": report["first_round"]["chance"]}
    for when in ("first_round", "checkpoint"):
        row.update({f"{when}.{k}": report[when].get(k) for k in FIGURES})
    return {**row, **wire_attack(spies[0], config, seed)}


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pair(rows: list[dict], figure: str) -> str:
    return f"{_cell(_mean(rows, 'first_round.' + figure))} / {_cell(_mean(rows, 'checkpoint.' + figure))}"


def _wire(rows: list[dict]) -> str:
    return " / ".join(_cell(_mean(rows, key)) for key in ("wire_first", "wire_last", "wire_linked"))


def _held_out_shuffled(rows: list[dict]) -> str:
    worst = [max(r["first_round.shuffled"], r["checkpoint.shuffled"]) for r in rows]
    return _cell(statistics.fmean(worst))


def _wire_shuffled(rows: list[dict]) -> str:
    """The largest shuffled-label score of the three wire attacks (they cluster the same rows)."""
    worst = [max(r[f"{k}_shuffled"] for k in ("wire_first", "wire_last", "wire_linked")) for r in rows]
    return _cell(statistics.fmean(worst))


def _examples(results: dict[str, list[dict]]) -> int:
    """How many held-out rows the attacks read (--victims, or all the test rows where there are fewer)."""
    return int(next(iter(results.values()))[0]["first_round.examples"])


def write_table(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    """The markdown table (means over seeds; test accuracy with its range) and the raw rows as JSON."""
    lines = [
        f"SFLv1 --labels client, 2 clients, model cnn, {args.epochs} rounds on {args.data}, seeds "
        f"{', '.join(map(str, args.seeds))} (means); {_examples(results)} held-out rows attacked at the first round / "
        "the end; chance 0.1.",
        "",
        "| setting | test accuracy (min-max) | gradient attack, held-out rows | on the wire: round 1 / last / "
        "linked | server classifies | middle's output clustered | shuffled labels (held-out; wire) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        accs = [r["test_accuracy"] for r in rows]
        lines.append(
            f"| {name} | {statistics.fmean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f}) | {_pair(rows, 'accuracy')} "
            f"| {_wire(rows)} | {_pair(rows, 'classify')} | {_pair(rows, 'features')} "
            f"| {_held_out_shuffled(rows)}; {_wire_shuffled(rows)} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="training rounds per run (default 20, the default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, choices=(8, 32), default=8, help="8: built-in digits; 32: upscaled")
    parser.add_argument("--victims", type=int, default=256, help="held-out test rows the attacks read")
    parser.add_argument("--only", default=None, help="run only these settings (names separated by ';')")
    parser.add_argument("--out", type=Path, default=Path("bench") / "labels")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.data = "digits"
    if args.size == 32:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        args.data = f"{Path(__file__).resolve().parent / 'privacy_table.py'}:upscaled_digits"
    names = [n for n in SETTINGS if not args.only or n in args.only.split(";")]
    results: dict[str, list[dict]] = {}
    for name in names:
        for seed in args.seeds:
            row = train_and_attack(name, seed, args)
            results.setdefault(name, []).append(row)
            print(name, seed, json.dumps(row), flush=True)
        write_table(results, args)
    print(write_table(results, args))


if __name__ == "__main__":
    main()
