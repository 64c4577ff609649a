"""--device cuda: the same maths on the GPU. Skipped where torch.cuda.is_available() is false."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from splitfed.config import RunConfig
from splitfed.models import build_model, split_model
from splitfed.testing import run_in_threads

pytestmark = pytest.mark.gpu


def test_split_equals_unsplit_on_cuda() -> None:
    x, y = torch.randn(8, 1, 64, 128, device="cuda"), torch.randint(0, 7, (8,), device="cuda")
    whole = build_model("cnn", (1, 64, 128), 7, seed=0).cuda()
    F.cross_entropy(whole(x), y).backward()
    twin = build_model("cnn", (1, 64, 128), 7, seed=0).cuda()
    client, server = split_model(twin, 2)
    acts = client(x)
    sent = acts.detach().requires_grad_(True)
    F.cross_entropy(server(sent), y).backward()
    acts.backward(sent.grad)
    for (name, p), q in zip(whole.named_parameters(), twin.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2", "fedavg"])
def test_cuda_run_matches_cpu_run(protocol: str, tmp_path: Path) -> None:
    results = {}
    for device in ("cpu", "cuda"):
        config = RunConfig(
            protocol=protocol, clients=2, epochs=2, optimizer="sgd", lr=0.05, seed=3, device=device, timeout=60
        )
        results[device] = json.loads(run_in_threads(config, tmp_path / device).read_text())
    assert abs(results["cpu"]["test_loss"] - results["cuda"]["test_loss"]) < 1e-3
    assert abs(results["cpu"]["test_accuracy"] - results["cuda"]["test_accuracy"]) < 0.02


def test_multi_process_run_on_cuda(run_protocol) -> None:
    summary, _ = run_protocol("sflv1", "--clients", "2", "--epochs", "2", "--device", "cuda")
    assert summary["test_accuracy"] > 0.8
