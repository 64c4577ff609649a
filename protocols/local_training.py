"""Training and testing a whole (unsplit) model on data one party holds.

Shared by the baselines: centralised training (one party holds everything) and
FedAvg (each client trains the whole model on its own rows between averages).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from splitfed.config import RunConfig
from splitfed.data.shards import ClientShard, batch_order
from splitfed.devices import autocast
from splitfed.metrics import Tally

from .split_steps import infer


def train_local(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    shard: ClientShard,
    config: RunConfig,
    *,
    round: int,
    client: int,
    device: torch.device,
    on_batch: Callable[[], None] | None = None,
) -> Tally:
    """``config.local_epochs`` passes over the shard, in the same batch order the split protocols use."""
    tally = Tally(len(shard.classes))
    model.train()
    for epoch in range(config.local_epochs):
        batches = batch_order(
            len(shard.train_y), config.batch_size, seed=config.seed, client=client, round=round, epoch=epoch
        )
        for step, rows in enumerate(batches):
            x, y = shard.train_batch(rows, seed=config.seed, client=client, round=round, epoch=epoch, step=step)
            x, y = x.to(device), y.to(device)
            with autocast(device, config.precision):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tally.add(logits.detach(), y, float(loss.detach()) * len(y))
            if on_batch is not None:
                on_batch()
    return tally


@torch.inference_mode()
def evaluate_local(
    model: nn.Module,
    shard: ClientShard,
    device: torch.device,
    batch: int = 256,
    *,
    split: str = "test",
    precision: str = "32",
) -> Tally:
    """The model on the shard's ``test`` rows (or its ``val`` rows), at ``--precision``."""
    tally = Tally(len(shard.classes))
    rows_x, rows_y = shard.eval_set(split)
    model.eval()
    for start in range(0, len(rows_y), batch):
        x, y = rows_x[start : start + batch].to(device), rows_y[start : start + batch].to(device)
        with autocast(device, precision):
            logits = infer(model, x).float()
        tally.add(logits, y, float(F.cross_entropy(logits, y, reduction="sum")))
    model.train()
    return tally
