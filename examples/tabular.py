"""Data and a model of your own for splitfed: a table, not images.

scikit-learn's bundled breast-cancer set (569 rows, 30 numeric features, 2 classes; it
ships inside scikit-learn, nothing is downloaded), with a small MLP split in two:

    splitfed run sflv1 --clients 2 --epochs 20 \\
        --data examples/tabular.py:breast_cancer --model examples/tabular.py:mlp

``--data`` calls ``breast_cancer()`` in each client process, on that client's machine. It
returns the rows as tensors; ``splitfed run`` then gives each client its own share, as it
does for image folders (``--partition``, ``--test-split``). A client on a machine of its
own (``splitfed client --data examples/tabular.py:breast_cancer``) trains on every row the
function returns there.
"""

from __future__ import annotations

import torch
from torch import nn


def breast_cancer() -> dict:
    """Rows as a dict: ``x`` (N, 30) float, ``y`` (N,) int, and the class names."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    # Standardised with the whole public set's means and spreads, used as constants that every
    # site shares; a real federation would agree on such constants before training.
    x = (x - x.mean(0)) / x.std(0)
    return {"x": x, "y": torch.tensor(bunch.target), "classes": [str(c) for c in bunch.target_names]}


def mlp(shape: tuple[int, ...], n_classes: int) -> nn.Sequential:
    """Three blocks: the client keeps the first (``--cut 1``), the server the other two."""
    (features,) = shape
    return nn.Sequential(
        nn.Sequential(nn.Linear(features, 64), nn.ReLU()),
        nn.Sequential(nn.Linear(64, 32), nn.ReLU()),
        nn.Linear(32, n_classes),
    )
