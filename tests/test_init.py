"""Seeded initialisation is deterministic whatever runs beside it (parties as threads of one process)."""

from __future__ import annotations

import random
import threading

import pytest
import torch
from torch import nn

from splitfed.models import build_model
from splitfed.models.rnn import build_segments
from splitfed.models.vertical import seeded_head, seeded_top

BUILDERS = {
    "cnn": lambda seed: build_model("cnn", (1, 16, 32), 7, seed),
    "resnet18": lambda seed: build_model("resnet18", (1, 8, 8), 10, seed),
    "lstm-segments": lambda seed: build_segments("lstm", 8, 16, 10, 2, seed),
    "gru-segments": lambda seed: build_segments("gru", 8, 16, 10, 2, seed),
    "vertical-head": lambda seed: seeded_head(1, 8, 4, seed, 1),
    "vertical-head-cnn": lambda seed: seeded_head(1, 8, 4, seed, 1, "cnn"),
    "conv-encoded-segments": lambda seed: build_segments("gru", 8, 16, 10, 2, seed, encoder="conv"),
    "mobilenet": lambda seed: build_model("mobilenet", (1, 16, 32), 7, seed),
    "resnet10": lambda seed: build_model("resnet10", (1, 16, 32), 7, seed),
    "vertical-top": lambda seed: seeded_top(2, 10, seed),
}


def _flat(built: object) -> list[torch.Tensor]:
    if isinstance(built, nn.Module):
        return [t.detach().clone() for t in (*built.parameters(), *built.buffers())]
    return [t for item in built for t in _flat(item)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_builds_neither_read_nor_change_the_global_rng() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = {name: _flat(build(5)) for name, build in BUILDERS.items()}
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(999)  # another global seed must not matter either
    for name, build in BUILDERS.items():
        assert _same(first[name], _flat(build(5))), name
        assert not _same(first[name], _flat(build(6))), name  # the seed does matter


def test_initialisation_is_deterministic_under_contention() -> None:
    """Eight threads build every model with several seeds at once, while a ninth thread keeps
    reseeding and drawing from torch's global RNG: every build equals the serial reference."""
    seeds = [0, 1, 2]
    reference = {(name, s): _flat(build(s)) for name, build in BUILDERS.items() for s in seeds}
    stop = threading.Event()
    mismatches: list[str] = []
    errors: list[BaseException] = []

    def noise() -> None:
        rng = random.Random(0)
        while not stop.is_set():
            torch.manual_seed(rng.randrange(1 << 30))
            torch.rand(64)

    def worker(k: int) -> None:
        jobs = [(name, s) for name in BUILDERS for s in seeds] * 2
        random.Random(k).shuffle(jobs)
        try:
            for name, s in jobs:
                if not _same(reference[(name, s)], _flat(BUILDERS[name](s))):
                    mismatches.append(f"{name} seed {s} in thread {k}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    noisy = threading.Thread(target=noise, daemon=True)
    noisy.start()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    stop.set()
    noisy.join(10)
    assert not errors, errors
    assert not mismatches, mismatches


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_initialisation_keeps_the_layer_distributions(name: str) -> None:
    """Same family of distributions as PyTorch's defaults: the spread of each layer's weights matches."""
    model = BUILDERS[name](0)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.numel() >= 256:
            fan_in = module.weight[0].numel()
            std = float(module.weight.detach().std())
            if name == "resnet18" and isinstance(module, nn.Conv2d):  # He normal, fan-out
                fan_out = module.weight.shape[0] * module.weight[0, 0].numel()
                expected = (2.0 / fan_out) ** 0.5
            else:  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                expected = (1.0 / fan_in) ** 0.5 / 3**0.5
            assert std == pytest.approx(expected, rel=0.15), module
        if isinstance(module, (nn.GroupNorm, nn.BatchNorm2d)):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
