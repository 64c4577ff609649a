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
(batches of the run's size, mean loss, after the run's defences on the activations and on the
gradient, with noise the attacker cannot know drawn afresh), so a finished run can be attacked at its
first round (the initial weights every party builds from the seed) and at its checkpoint.

Two more attacks read the activations rather than the gradient: where the heads are averaged
through the server, the server holds the whole model and simply classifies the activations it
receives (:func:`classify_attack`); and the middle's output, which training makes separable by
class, can be clustered like the gradients (:func:`feature_attack`), with or without the head.
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
    head_release=None,
    smoothing: float = 0.0,
    precision: str = "32",
    draw: int = 0,
) -> torch.Tensor:
    """The gradient at the head's input that a client returns for each row of ``x`` (one row each), in
    training batches of ``batch`` with the mean loss, as ``--labels client`` sends it. ``release`` is the
    client's defence on its front's activations (clipping, noise) and ``head_release`` its defence on the
    returned gradient (``--label-clip``/``--label-noise``), as in the run; ``smoothing`` and
    ``precision`` are the run's ``--label-smoothing`` and ``--precision``. The parts are in eval mode
    (the built-in models hold no dropout or batch statistics, so that is their training arithmetic).
    ``draw`` numbers the gradient noise's draw (one per round in which the client sends these rows)."""
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
        grad = out.grad
        if head_release is not None:  # fresh noise: the client's own draws are private
            grad = head_release(grad, torch.Generator().manual_seed(1_000_003 * (draw + 1) + start))
        grads.append(grad.reshape(len(rows), -1))
    return torch.cat(grads)


def linked_gradients(parts: tuple, x: torch.Tensor, y: torch.Tensor, sends: int, **settings) -> torch.Tensor:
    """The mean of ``sends`` noisy returns of each row, as an attacker who links an example's gradients
    across the rounds of a run would average them (a client sends each training row once per round).
    At fixed weights, which favours the attacker: in a run the weights move between rounds."""
    total = head_input_gradients(*parts, x, y, **settings)
    for draw in range(1, sends):
        total += head_input_gradients(*parts, x, y, draw=draw, **settings)
    return total / sends


@torch.no_grad()
def middle_outputs(
    front: nn.Module, middle: nn.Module, x: torch.Tensor, *, batch: int = 256, release=None
) -> torch.Tensor:
    """What the server computes from the activations it receives for ``x`` (after the client's defence):
    the middle's output, one row per example (in its own shape)."""
    outs = []
    for start in range(0, len(x), batch):
        acts = front(x[start : start + batch])
        if release is not None:
            acts = release(acts, torch.Generator().manual_seed(start))
        outs.append(middle(acts).float())
    return torch.cat(outs)


@torch.no_grad()
def classify_attack(head: nn.Module, outs: torch.Tensor, labels: torch.Tensor) -> float:
    """The accuracy of the server's copy of the head on the middle's outputs: what a server that holds the
    whole model (heads averaged through it) reads without any attack at all."""
    return float((head(outs).argmax(1) == labels).float().mean())


def feature_attack(outs: torch.Tensor, labels: torch.Tensor, classes: int, *, seed: int = 0) -> LabelAttackResult:
    """The middle's outputs clustered by direction and named like the gradients': no head needed."""
    return infer_labels(outs, labels, classes, seed=seed)


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
