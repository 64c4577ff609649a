from __future__ import annotations

import numpy as np
import pytest

from splitfed.data import load_index, partition, split_train_test
from splitfed.data.shards import client_rows, client_shard
from splitfed.errors import ConfigError, DataError


def test_digits_is_the_builtin_dataset() -> None:
    index = load_index("digits")
    assert len(index) == 1797 and index.shape == (1, 8, 8) and len(index.classes) == 10


def test_digits_read_from_the_file_equal_scikit_learns_loader() -> None:
    """The built-in rows are read from scikit-learn's file without importing it; they must be its rows."""
    from sklearn.datasets import load_digits

    bunch, index = load_digits(), load_index("digits")
    assert np.array_equal(index.pixels, (bunch.images.astype(np.float32) / 16.0)[:, None])
    assert np.array_equal(index.labels, bunch.target) and index.classes == [str(c) for c in bunch.target_names]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.3", "dirichlet:100"])
def test_partitions_are_disjoint_and_cover_the_rows(scheme: str) -> None:
    labels = np.random.default_rng(0).integers(0, 7, 500)
    rows = np.arange(500)
    parts = partition(rows, labels, None, 4, scheme, seed=1)
    joined = np.concatenate(parts)
    assert len(joined) == 500 and set(joined) == set(rows) and all(len(p) for p in parts)
    assert [p.tolist() for p in parts] == [p.tolist() for p in partition(rows, labels, None, 4, scheme, seed=1)]


def test_dirichlet_skews_labels() -> None:
    labels = np.repeat(np.arange(5), 200)
    parts = partition(np.arange(1000), labels, None, 2, "dirichlet:0.1", seed=0)
    shares = [np.bincount(labels[p], minlength=5) / len(p) for p in parts]
    assert max(abs(shares[0] - shares[1])) > 0.3


def test_subject_split_and_partition_never_leak_a_person() -> None:
    subjects = [f"F{i % 12:02d}" for i in range(240)]
    labels = np.arange(240) % 7
    train, test = split_train_test(labels, subjects, "subject", 0.25, seed=3)
    assert not {subjects[i] for i in train} & {subjects[i] for i in test}
    parts = partition(train, labels, subjects, 3, "subject", seed=3)
    people = [{subjects[i] for i in p} for p in parts]
    assert all(not (people[i] & people[j]) for i in range(3) for j in range(i + 1, 3))


def test_clear_errors() -> None:
    with pytest.raises(DataError, match="has none"):
        split_train_test(np.zeros(10), None, "subject", 0.2, 0)
    with pytest.raises(ConfigError, match="ALPHA must be a positive"):
        partition(np.arange(10), np.zeros(10), None, 2, "dirichlet:x", 0)
    with pytest.raises(DataError, match="cannot be shared among 20"):
        partition(np.arange(10), np.zeros(10), None, 20, "iid", 0)
    with pytest.raises(DataError, match="not found"):
        load_index("/no/such/folder")


def test_clients_hold_disjoint_rows_and_load_only_their_own() -> None:
    index = load_index("digits")
    got = [client_rows(index, 3, c, "iid", "random", 0.2, 5) for c in range(3)]
    trains = [set(t) for t, _ in got]
    tests = [set(t) for _, t in got]
    assert sum(map(len, trains)) + sum(map(len, tests)) == 1797
    assert not (set().union(*trains) & set().union(*tests))
    shard = client_shard("digits", clients=3, client=1, seed=5)
    assert len(shard.train_y) == len(got[1][0]) and shard.train_x.shape[1:] == (1, 8, 8)
