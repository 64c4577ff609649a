"""A split model computes exactly what the unsplit model computes, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from splitfed.errors import ConfigError
from splitfed.models import MODELS, architecture, build_model, check_cut, default_cut, resolve_cut, split_model


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cnn", (1, 8, 8)),
        ("cnn", (1, 64, 128)),
        ("resnet18", (1, 16, 16)),
        ("cnn-deep", (1, 32, 64)),
        ("cnn-narrow", (1, 32, 32)),
        ("mobilenet", (1, 32, 64)),
        ("mobilenet-narrow", (1, 32, 64)),
        ("mobilenet-narrow", (1, 64, 128)),
        ("mobilenet-private", (1, 32, 64)),
        ("mobilenet-private", (1, 64, 128)),
        ("resnet10", (1, 32, 64)),
        ("resnet10", (3, 16, 16)),
    ],
)
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


def test_auto_is_the_compact_cnn_for_small_images_and_mobilenet_from_32_pixels() -> None:
    assert architecture("auto", (1, 8, 8)) == architecture("auto", (1, 31, 64)) == "cnn"
    assert architecture("auto", (1, 32, 64)) == architecture("auto", (3, 64, 128)) == "mobilenet"
    assert architecture("resnet10", (1, 8, 8)) == "resnet10"  # a name is built as given
    for shape, same_as in (((1, 8, 8), "cnn"), ((1, 64, 128), "mobilenet")):
        auto, named = build_model("auto", shape, 7, seed=2), build_model(same_as, shape, 7, seed=2)
        assert [k for k, _ in auto.named_parameters()] == [k for k, _ in named.named_parameters()]
        assert all(torch.equal(p, q) for p, q in zip(auto.parameters(), named.parameters(), strict=True))
        assert check_cut("auto", None, shape, 7) == 1
    with pytest.raises(ConfigError, match="takes images"):
        build_model("auto", (30,), 2, seed=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_built_in_models_draw_nothing_at_random_while_training(name: str) -> None:
    """Dropout would draw from torch's process-global RNG: parties in threads would share it and a
    resumed run could not replay the masks, so same seed, same numbers would not hold."""
    model = build_model(name, (1, 16, 32), 7, seed=0)
    assert not [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]


@pytest.mark.parametrize(
    ("name", "shape", "sent"),
    [
        ("cnn-narrow", (1, 32, 32), (8, 4, 4)),
        ("cnn-narrow", (1, 64, 128), (8, 4, 4)),
        ("mobilenet-narrow", (1, 32, 32), (8, 2, 2)),
        ("mobilenet-narrow", (1, 32, 64), (8, 2, 4)),
        ("mobilenet-narrow", (1, 64, 128), (8, 4, 4)),
        ("mobilenet-narrow", (1, 96, 96), (8, 4, 4)),
        ("mobilenet-private", (1, 8, 8), (256,)),
        ("mobilenet-private", (1, 64, 128), (256,)),
    ],
)
def test_narrow_models_send_their_waist_at_their_default_cut(name: str, shape: tuple, sent: tuple) -> None:
    """What a defence's noise is sized for: at most 8 x 4 x 4 numbers per example leave the client (256 from
    mobilenet-private's pool, --privacy strong's, each example centred and scaled alike at any input size)."""
    client, _ = split_model(build_model(name, shape, 7, seed=0), default_cut(name))
    sent_now = client(torch.randn(2, *shape))
    assert tuple(sent_now.shape) == (2, *sent)
    if name == "mobilenet-private":
        assert torch.allclose(sent_now.mean(1), torch.zeros(2), atol=1e-5)
        assert torch.allclose(sent_now.norm(dim=1), torch.full((2,), 256**0.5), atol=1e-2)
