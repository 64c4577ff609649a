"""Classification metrics from sums and a confusion matrix (mergeable across parties)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from splitfed.errors import DivergedError, ProtocolError


def finite_loss(value: float, what: str = "loss") -> float:
    """``value`` if it is a finite number; a NaN or infinite loss means training diverged."""
    if not math.isfinite(value):
        raise DivergedError(f"the {what} became {value}")
    return value


@dataclass
class Tally:
    """Running sums for one phase (train or test); merge tallies from many clients with +."""

    n_classes: int
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.confusion is None:
            self.confusion = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: float) -> int:
        """Add one batch; returns the number of correct predictions in it."""
        finite_loss(float(loss_sum))
        pred = logits.argmax(dim=1).cpu().numpy()
        true = labels.cpu().numpy()
        np.add.at(self.confusion, (true, pred), 1)
        correct = int((pred == true).sum())
        self.loss_sum += float(loss_sum)
        self.correct += correct
        self.count += len(true)
        return correct

    def add_counts(self, loss_sum: float, correct: int, count: int) -> None:
        self.loss_sum += finite_loss(float(loss_sum))
        self.correct += int(correct)
        self.count += int(count)

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.n_classes,
            self.loss_sum + other.loss_sum,
            self.correct + other.correct,
            self.count + other.count,
            self.confusion + other.confusion,
        )

    def merge(self, other: Tally) -> None:
        """Add ``other``'s sums to this tally (in place)."""
        self.loss_sum += other.loss_sum
        self.correct += other.correct
        self.count += other.count
        self.confusion += other.confusion

    def to_meta(self) -> dict:
        """JSON-safe sums, for a party that reports its tally to the server."""
        return {
            "loss_sum": self.loss_sum,
            "correct": self.correct,
            "count": self.count,
            "confusion": self.confusion.tolist(),
        }

    def add_meta(self, meta: dict) -> None:
        """Merge a tally a peer reported with :meth:`to_meta` (a confusion matrix is optional).

        What a peer reports is checked: a missing or mistyped figure, a negative count or a confusion
        matrix of the wrong shape is a :class:`ProtocolError`, never a bare KeyError."""
        try:
            loss_sum, correct, count = float(meta["loss_sum"]), int(meta["correct"]), int(meta["count"])
            confusion = np.asarray(meta["confusion"], dtype=np.int64) if "confusion" in meta else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a malformed metrics report ({exc!r}): want loss_sum, correct and count") from None
        if count < 0 or not 0 <= correct <= count:
            raise ProtocolError(f"a metrics report counts {correct} correct of {count}")
        if confusion is not None and (confusion.shape != self.confusion.shape or (confusion < 0).any()):
            raise ProtocolError(f"a metrics report's confusion matrix is {confusion.shape}, not {self.confusion.shape}")
        self.add_counts(loss_sum, correct, count)
        if confusion is not None:
            self.confusion += confusion

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.confusion)


class ClientTallies:
    """One :class:`Tally` per client, for batches counted in whatever order their steps finish, added up in
    client order: the float sums then do not depend on which client's batch was counted first."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.tallies: dict[str, Tally] = {}

    def of(self, peer: str) -> Tally:
        return self.tallies.setdefault(peer, Tally(self.n_classes))

    def merge_into(self, into: Tally, order: list[str]) -> None:
        """Add every client's tally to ``into`` in ``order`` (clients not in it, such as lost ones, last, by name)."""
        for peer in sorted(self.tallies, key=lambda p: (order.index(p) if p in order else len(order), p)):
            into.merge(self.tallies[peer])


def macro_f1(confusion: np.ndarray) -> float:
    """Unweighted mean F1 over classes that occur in the labels or the predictions."""
    tp = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return float("nan")
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    return float(f1[present].mean())
