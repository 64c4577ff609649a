from __future__ import annotations

import pytest
import torch

from splitfed.aggregation import fedavg
from splitfed.errors import ProtocolError


def test_weighted_average_by_sample_count() -> None:
    a = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(10)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(20)}
    out = fedavg([a, b], [1.0, 2.0])
    assert torch.allclose(out["w"], torch.tensor([2.0, 4.0]))
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 17  # round(10/3 + 40/3)


def test_single_state_is_returned_unchanged() -> None:
    s = {"w": torch.randn(3, 3)}
    assert torch.equal(fedavg([s], [7.0])["w"], s["w"])


def test_mismatched_states_are_refused() -> None:
    with pytest.raises(ProtocolError, match="different keys"):
        fedavg([{"a": torch.ones(1)}, {"b": torch.ones(1)}], [1, 1])
    with pytest.raises(ProtocolError, match="shape"):
        fedavg([{"a": torch.ones(1)}, {"a": torch.ones(2)}], [1, 1])
    with pytest.raises(ProtocolError, match="positive sum"):
        fedavg([{"a": torch.ones(1)}], [0])
