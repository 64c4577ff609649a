"""Label inference from the gradients a label-private client returns (``splitfed attack RUN --labels``).

With ``--labels client`` the server never receives labels, but for every training example it
receives the gradient of the loss at the head's input, d loss / d out. For a classifier head
that gradient is, example by example, the head's weights applied to (softmax - one-hot label):
its *direction* is set mostly by the label. The attacker (the server) clusters the unit-length
gradients of a batch into as many groups as there are classes (spherical k-means) and names each
group with a class. Scored here as the accuracy of the best one-to-one naming (Hungarian
matching): the attacker needs one example of known label per class to name the groups, or the
class frequencies. Two baselines keep the figure honest: chance (1 / classes), and the same
clusters scored against the labels shuffled (what this scoring gives labels the gradients do not
carry).

:func:`head_input_gradients` computes exactly what the client sends for given rows and weights
(batches of the run's size, mean loss), so a finished run can be attacked at its first round
(the initial weights every party builds from the seed) and at its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splitfed.devices import autocast


@dataclass
class LabelAttackResult:
    accuracy: float  # the clusters named by the best one-to-one matching
    chance: float  # 1 / classes
    shuffled: float  # the same clusters scored against the labels shuffled
    examples: int
    classes: int

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def head_input_gradients(
    front: nn.Module,
    middle: nn.Module,
    head: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch: int = 32,
    release=None,
    smoothing: float = 0.0,
    precision: str = "32",
) -> torch.Tensor:
    """The gradient at the head's input that a client returns for each row of ``x`` (one row each), in
    training batches of ``batch`` with the mean loss, as ``--labels client`` sends it. ``release`` is the
    client's defence on its front's activations (clipping, noise), as in the run; ``smoothing`` and
    ``precision`` are the run's ``--label-smoothing`` and ``--precision``. The parts are in eval mode
    (the built-in models hold no dropout or batch statistics, so that is their training arithmetic)."""
    grads = []
    for start in range(0, len(x), batch):
        rows, labels = x[start : start + batch], y[start : start + batch]
        with torch.no_grad():
            acts = front(rows)
            if release is not None:
                acts = release(acts, torch.Generator().manual_seed(start))
            with autocast(acts.device, precision):
                out = middle(acts)
        out = out.detach().requires_grad_(True)
        with autocast(out.device, precision):
            logits = head(out)
        F.cross_entropy(logits.float(), labels, label_smoothing=smoothing).backward()
        grads.append(out.grad.reshape(len(rows), -1))
    return torch.cat(grads)


def spherical_kmeans(z: torch.Tensor, k: int, *, seed: int = 0, iters: int = 50, restarts: int = 5) -> torch.Tensor:
    """Cluster ids of the rows of ``z`` by direction (cosine similarity), k-means++ seeded; the best of
    ``restarts`` runs by total similarity to their centres."""
    unit = F.normalize(z.double(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    best, best_score = torch.zeros(len(z), dtype=torch.long), -float("inf")
    for _ in range(restarts):
        centres = _plus_plus(unit, k, gen)
        for _ in range(iters):
            ids = (unit @ centres.T).argmax(1)
            new = torch.stack([unit[ids == c].sum(0) if (ids == c).any() else centres[c] for c in range(k)])
            new = F.normalize(new, dim=1)
            if torch.allclose(new, centres):
                break
            centres = new
        score = float((unit @ centres.T).max(1).values.sum())
        if score > best_score:
            best, best_score = (unit @ centres.T).argmax(1), score
    return best


def _plus_plus(unit: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ starting centres on the unit sphere (cosine distance)."""
    chosen = [int(torch.randint(len(unit), (1,), generator=gen))]
    for _ in range(1, k):
        dist = (1 - (unit @ unit[chosen].T).max(1).values).clamp_min(0)
        if float(dist.sum()) == 0:
            chosen.append(int(torch.randint(len(unit), (1,), generator=gen)))
            continue
        chosen.append(int(torch.multinomial(dist, 1, generator=gen)))
    return unit[chosen].clone()


def matched_accuracy(clusters: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The accuracy of the best one-to-one naming of ``k`` clusters with ``k`` classes."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(labels))


def infer_labels(grads: torch.Tensor, labels: torch.Tensor, classes: int, *, seed: int = 0) -> LabelAttackResult:
    """The attack on returned gradients (one row per example), scored against the true ``labels``."""
    clusters = spherical_kmeans(grads.reshape(len(grads), -1), classes, seed=seed).numpy()
    truth = labels.numpy()
    shuffled = np.random.default_rng(seed).permutation(truth)
    return LabelAttackResult(
        accuracy=matched_accuracy(clusters, truth, classes),
        chance=1.0 / classes,
        shuffled=matched_accuracy(clusters, shuffled, classes),
        examples=len(truth),
        classes=classes,
    )
