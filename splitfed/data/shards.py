"""What one client holds: its training and test rows, loaded, plus a batch order.

The batch order is a pure function of (seed, client, round, local epoch), so the
equivalence tests can replay exactly the batches a protocol saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from splitfed.data.augment import Augment, batch_generator, make_augment
from splitfed.data.datasets import DatasetIndex, load_index
from splitfed.data.partition import partition, split_train_test


@dataclass
class ClientShard:
    classes: list[str]
    shape: tuple[int, int, int]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_ids: list[str]
    test_ids: list[str]
    #: validation rows carved from this client's training rows (--val-fraction); empty without it
    val_x: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    val_y: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    #: applied to training batches only (see :mod:`splitfed.data.augment`); None = as loaded
    augment: Augment | None = field(default=None, repr=False)

    def eval_set(self, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The rows an evaluation pass runs over: ``test`` (held out) or ``val`` (from the training rows)."""
        return (self.val_x, self.val_y) if split == "val" else (self.test_x, self.test_y)

    def train_batch(self, rows: torch.Tensor, *, seed: int, client: int, round: int, epoch: int, step: int):
        """Inputs and labels of training rows ``rows``, augmented if this client augments."""
        x, y = self.train_x[rows], self.train_y[rows]
        if self.augment is not None:
            x = self.augment(x, batch_generator(seed, client, round, epoch, step))
        return x, y


def client_rows(
    index: DatasetIndex, clients: int, client: int, scheme: str, test_split: str, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of client ``client``'s train and test data (same answer on every party)."""
    train, test = split_train_test(index.labels, index.subjects, test_split, test_fraction, seed)
    train_parts = partition(train, index.labels, index.subjects, clients, scheme, seed + 1)
    # Test rows are shared out too (each party holds its own); subject-wise when asked.
    test_scheme = "subject" if scheme == "subject" else "iid"
    test_parts = partition(test, index.labels, index.subjects, clients, test_scheme, seed + 2)
    return train_parts[client], test_parts[client]


def carve_validation(
    rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int, client: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into (train, validation): ``fraction`` of each class, at least one where a
    class has two or more rows. Never touches test rows: it is only ever given training rows."""
    if not fraction:
        return rows, rows[:0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, client, 0x7A1]))
    held: list[int] = []
    for c in np.unique(labels[rows]):
        mine = rng.permutation(rows[labels[rows] == c])
        if len(mine) > 1:
            held.extend(mine[: max(1, round(len(mine) * fraction))])
    val = np.sort(np.asarray(held, dtype=np.int64))
    return np.setdiff1d(rows, val), val


def client_shard(
    source: str,
    *,
    clients: int = 1,
    client: int = 0,
    scheme: str = "iid",
    test_split: str = "random",
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: str = "none",
    val_fraction: float = 0.0,
) -> ClientShard:
    """One client's rows; ``augment`` is ``--augment`` (``auto`` follows the kind of data);
    ``val_fraction`` of its training rows become its validation rows."""
    index = load_index(source)
    train_rows, test_rows = client_rows(index, clients, client, scheme, test_split, test_fraction, seed)
    train_rows, val_rows = carve_validation(train_rows, index.labels, val_fraction, seed, client)
    val_x, val_y = index.load(val_rows)
    train_x, train_y = index.load(train_rows)
    test_x, test_y = index.load(test_rows)
    return ClientShard(
        classes=index.classes,
        shape=index.shape,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        train_ids=[index.ids[i] for i in train_rows],
        test_ids=[index.ids[i] for i in test_rows],
        augment=make_augment(augment, index.kind, index.shape),
        val_x=val_x,
        val_y=val_y,
    )


def batch_order(n: int, batch_size: int, *, seed: int, client: int, round: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled mini-batches of ``range(n)`` for one local epoch; deterministic in its arguments."""
    state = np.random.SeedSequence([seed, client, round, epoch]).generate_state(1)[0]
    gen = torch.Generator().manual_seed(int(state))
    perm = torch.randperm(n, generator=gen)
    return list(perm.split(batch_size))
