"""--device cuda: the same maths on the GPU. Skipped where torch.cuda.is_available() is false."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from splitfed.protocols.split_steps import server_step

from splitfed.config import RunConfig
from splitfed.models import build_model, split_model
from splitfed.testing import run_in_threads

pytestmark = pytest.mark.gpu


@pytest.fixture
def deterministic():
    """CUDA's deterministic kernels for one test: its atomics otherwise make two identical runs differ."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(False)


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


PROTOCOLS = [("sflv1", 2), ("sflv2", 2), ("fedavg", 2), ("sl", 2), ("centralized", 1), ("fedsl", 2), ("pyvertical", 2)]


def _figures(protocol: str, clients: int, device: str, out: Path) -> tuple[dict, list[dict]]:
    """One round at a small rate: a run's trajectory is chaotic, and after a few rounds at lr 0.05 a
    change of 1e-6 in the rate alone moves the test loss by 0.1 (measured on the CPU), so CPU and
    CUDA are compared where rounding cannot have grown yet."""
    config = RunConfig(
        protocol=protocol, clients=clients, epochs=1, optimizer="sgd", lr=0.01, seed=3, device=device, timeout=60
    )
    summary = json.loads(run_in_threads(config, out).read_text())
    return summary, [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("protocol", "clients"), PROTOCOLS)
def test_cuda_run_matches_cpu_run(protocol: str, clients: int, tmp_path: Path, deterministic) -> None:
    (cpu, cpu_rows), (cuda, cuda_rows) = (_figures(protocol, clients, d, tmp_path / d) for d in ("cpu", "cuda"))
    assert abs(cpu_rows[0]["train_loss"] - cuda_rows[0]["train_loss"]) < 1e-3
    assert abs(cpu["test_accuracy"] - cuda["test_accuracy"]) < 0.03


@pytest.mark.parametrize(("protocol", "clients"), PROTOCOLS)
def test_cuda_runs_repeat_exactly_with_deterministic_kernels(
    protocol: str, clients: int, tmp_path: Path, deterministic
) -> None:
    first, second = (_figures(protocol, clients, "cuda", tmp_path / str(i)) for i in range(2))
    for key in ("train_loss", "test_loss", "test_accuracy"):  # the timings differ, the figures may not
        assert [row[key] for row in first[1]] == [row[key] for row in second[1]], key


def test_multi_process_run_on_cuda(run_protocol) -> None:
    summary, _ = run_protocol("sflv1", "--clients", "2", "--epochs", "2", "--device", "cuda")
    assert summary["test_accuracy"] > 0.8


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)])
def test_the_server_step_computes_in_the_chosen_dtype_on_cuda(precision: str, dtype: torch.dtype) -> None:
    client, server = (half.cuda() for half in split_model(build_model("cnn", (1, 16, 32), 4, seed=3), 1))
    seen: list[torch.dtype] = []
    server.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    opt = torch.optim.Adam(server.parameters(), lr=1e-3)
    acts = client(torch.randn(8, 1, 16, 32, device="cuda")).detach()
    grad, _, _ = server_step(server, opt, acts, torch.randint(0, 4, (8,), device="cuda"), precision=precision)
    assert seen == [dtype]
    assert grad.dtype == torch.float32 and grad.is_cuda and torch.isfinite(grad).all()
    assert all(p.dtype == torch.float32 for p in server.parameters())


@pytest.mark.parametrize(
    ("protocol", "clients", "precision"),
    [
        ("sflv1", 2, "bf16-mixed"),
        ("sflv2", 2, "bf16-mixed"),
        ("sl", 2, "bf16-mixed"),
        ("fedavg", 2, "bf16-mixed"),
        ("centralized", 1, "bf16-mixed"),
        ("fedsl", 2, "bf16-mixed"),
        ("pyvertical", 2, "bf16-mixed"),
        ("sflv1", 2, "16-mixed"),
    ],
)
def test_every_protocol_trains_mixed_on_cuda(protocol: str, clients: int, precision: str, tmp_path: Path) -> None:
    config = RunConfig(
        protocol=protocol, clients=clients, epochs=2, seed=2, device="cuda", timeout=60, precision=precision
    )
    summary = json.loads(run_in_threads(config, tmp_path / protocol).read_text())
    assert summary["status"] == "completed"
    assert summary["test_accuracy"] > 0.5, summary  # two rounds on the 8x8 digits, 10 classes


def test_multi_process_bf16_run_on_cuda(run_protocol) -> None:
    summary, _ = run_protocol(
        "sflv1", "--clients", "2", "--epochs", "2", "--device", "cuda", "--precision", "bf16-mixed"
    )
    assert summary["test_accuracy"] > 0.8


def test_precision_32_turns_tf32_off_and_the_mixed_ones_back_on() -> None:
    from splitfed.devices import use_precision

    use_precision(torch.device("cuda"), "32")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    use_precision(torch.device("cuda"), "bf16-mixed")
    assert torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
