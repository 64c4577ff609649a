"""A split model computes exactly what the unsplit model computes, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from splitfed.errors import ConfigError
from splitfed.models import build_model, resolve_cut, split_model


@pytest.mark.parametrize(("name", "shape"), [("cnn", (1, 8, 8)), ("cnn", (1, 64, 128)), ("resnet18", (1, 16, 16))])
def test_split_equals_unsplit_forward_and_gradients(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(4, *shape), torch.tensor([0, 1, 2, 3])
    whole = build_model(name, shape, 7, seed=1).eval()
    loss = F.cross_entropy(whole(x), y)
    loss.backward()
    reference = {k: p.grad.clone() for k, p in whole.named_parameters()}

    for cut in range(1, len(whole)):
        twin = build_model(name, shape, 7, seed=1).eval()
        client, server = split_model(twin, cut)
        acts = client(x)
        sent = acts.detach().requires_grad_(True)  # what crosses the wire
        split_loss = F.cross_entropy(server(sent), y)
        split_loss.backward()
        acts.backward(sent.grad)  # the gradient at the cut, returned to the client
        assert torch.allclose(split_loss, loss, atol=1e-6)
        for k, p in twin.named_parameters():
            assert torch.allclose(p.grad, reference[k], atol=1e-6), (cut, k)


def test_same_seed_same_weights_and_cut_range() -> None:
    a, b = build_model("cnn", (1, 8, 8), 10, seed=3), build_model("cnn", (1, 8, 8), 10, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ConfigError, match="out of range"):
        resolve_cut("cnn", 4, a)
    with pytest.raises(ConfigError, match="neither a built-in model"):
        build_model("vgg", (1, 8, 8), 10, seed=0)
