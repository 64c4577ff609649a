"""Train/test splits and the partition of rows across clients. Pure functions of a seed.

Every party calls these with the same arguments and gets the same answer, so each
client can load only its own rows without anyone shipping an index around.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitfed.errors import ConfigError, DataError


def parse_scheme(text: str) -> tuple[str, float | None]:
    """``iid``, ``subject`` or ``dirichlet:ALPHA`` -> (name, alpha)."""
    if text in ("iid", "subject"):
        return text, None
    if text.startswith("dirichlet:"):
        try:
            alpha = float(text.split(":", 1)[1])
        except ValueError:
            alpha = -1.0
        if alpha <= 0:
            raise ConfigError(f"--partition {text!r}: ALPHA must be a positive number, e.g. dirichlet:0.5")
        return "dirichlet", alpha
    raise ConfigError(f"--partition {text!r} is not one of iid, subject, dirichlet:ALPHA")


def split_train_test(
    labels: np.ndarray, subjects: Sequence[str] | None, mode: str, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for training and for testing. ``subject`` keeps every person on one side."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    n = len(labels)
    if mode == "random":
        test = []
        for c in np.unique(labels):  # stratified: each class keeps its share in the test set
            rows = rng.permutation(np.flatnonzero(labels == c))
            test.extend(rows[: max(1, round(len(rows) * fraction))] if len(rows) > 1 else [])
        test_rows = np.sort(np.array(test, dtype=np.int64))
    elif mode == "subject":
        people = _require_subjects(subjects, "--test-split subject")
        names = rng.permutation(sorted(set(people)))
        n_test = max(1, round(len(names) * fraction))
        if n_test >= len(names):
            raise DataError(f"only {len(names)} subject(s): too few to hold some out for testing")
        held = set(names[:n_test])
        test_rows = np.array([i for i, p in enumerate(people) if p in held], dtype=np.int64)
    else:
        raise ConfigError(f"--test-split {mode!r} is not one of random, subject")
    train_rows = np.setdiff1d(np.arange(n), test_rows)
    return train_rows, test_rows


def partition(
    rows: np.ndarray,
    labels: np.ndarray,
    subjects: Sequence[str] | None,
    n_clients: int,
    scheme: str,
    seed: int,
) -> list[np.ndarray]:
    """Split ``rows`` into ``n_clients`` disjoint, non-empty, sorted parts."""
    name, alpha = parse_scheme(scheme)
    if n_clients < 1:
        raise ConfigError("--clients must be at least 1")
    if len(rows) < n_clients:
        raise DataError(f"{len(rows)} rows cannot be shared among {n_clients} clients; use fewer clients")
    rng = np.random.default_rng(seed)
    if name == "iid":
        parts = np.array_split(rng.permutation(rows), n_clients)
    elif name == "subject":
        parts = _by_subject(rows, _require_subjects(subjects, "--partition subject"), n_clients, rng)
    else:
        parts = _dirichlet(rows, labels, n_clients, alpha or 1.0, rng)
    if any(len(p) == 0 for p in parts):
        raise DataError(f"--partition {scheme} left a client with no data; use fewer clients or a larger ALPHA")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _require_subjects(subjects: Sequence[str] | None, flag: str) -> Sequence[str]:
    if subjects is None:
        raise DataError(f"{flag} needs a person id per image, and this dataset has none; use random/iid instead")
    return subjects


def _by_subject(rows: np.ndarray, subjects: Sequence[str], n: int, rng: np.random.Generator) -> list[list[int]]:
    groups: dict[str, list[int]] = {}
    for r in rows:
        groups.setdefault(subjects[r], []).append(int(r))
    if len(groups) < n:
        raise DataError(f"{len(groups)} subject(s) cannot be shared among {n} clients; use fewer clients")
    parts: list[list[int]] = [[] for _ in range(n)]
    # Largest people first onto the smallest client: balanced sizes, whole people only.
    for key in sorted(groups, key=lambda k: (-len(groups[k]), rng.random())):
        min(parts, key=len).extend(groups[key])
    return parts


def _dirichlet(rows: np.ndarray, labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator) -> list[list[int]]:
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(n)]
        for c in np.unique(labels[rows]):
            members = rng.permutation(rows[labels[rows] == c])
            cuts = (np.cumsum(rng.dirichlet([alpha] * n))[:-1] * len(members)).astype(int)
            for part, chunk in zip(parts, np.split(members, cuts), strict=True):
                part.extend(int(r) for r in chunk)
        if all(parts):
            return parts
    raise DataError(f"dirichlet:{alpha} kept leaving a client empty; use a larger ALPHA or fewer clients")
