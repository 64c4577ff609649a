"""--precision changes the dtype the model steps compute in, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from splitfed.protocols.split_steps import server_eval, server_step

from splitfed.config import RunConfig
from splitfed.errors import ConfigError
from splitfed.models import build_model, split_model
from splitfed.testing import run_in_threads

COMPUTE = {"32": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _halves() -> tuple[torch.nn.Module, torch.nn.Module]:
    return split_model(build_model("cnn", (1, 16, 32), 4, seed=3), 1)


@pytest.mark.parametrize("precision", list(COMPUTE))
def test_the_server_step_computes_in_the_chosen_dtype(precision: str) -> None:
    client, server = _halves()
    seen: list[torch.dtype] = []
    server.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    opt = torch.optim.Adam(server.parameters(), lr=1e-3)
    acts = client(torch.randn(8, 1, 16, 32)).detach()
    labels = torch.randint(0, 4, (8,))
    grad, logits, loss_sum = server_step(server, opt, acts, labels, precision=precision)
    assert seen == [COMPUTE[precision]]
    assert grad.dtype == acts.dtype == torch.float32  # the gradient at the cut goes back as float32
    assert all(p.dtype == torch.float32 for p in server.parameters())  # weights stay float32
    assert all(t.dtype == torch.float32 for s in opt.state.values() for t in s.values() if t.is_floating_point())
    eval_logits, _ = server_eval(server, acts, labels, precision)
    assert eval_logits.dtype == torch.float32 and seen[-1] == COMPUTE[precision]


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="--precision 'bf16' is not one of 32, bf16-mixed, 16-mixed"):
        RunConfig(protocol="sflv1", precision="bf16")


def _run(tmp_path: Path, protocol: str, precision: str, clients: int = 2) -> tuple[dict, dict]:
    config = RunConfig(protocol=protocol, clients=clients, epochs=1, seed=2, timeout=30, precision=precision)
    summary = json.loads(run_in_threads(config, tmp_path / f"{protocol}-{precision}").read_text())
    return summary, torch.load(tmp_path / f"{protocol}-{precision}" / "checkpoint.pt", weights_only=True)


def _float_tensors(tree: object) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree] if tree.is_floating_point() else []
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _float_tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _float_tensors(v)]
    return []


def test_bf16_changes_the_compute_not_the_wire_nor_the_weights(tmp_path: Path) -> None:
    """SFLv1 at 32 and at bf16-mixed: the same tensor bytes on the wire (the loss printed into each reply's
    header may differ by a digit or two), float32 weights and optimizer state, slightly other numbers."""
    full, full_ckpt = _run(tmp_path, "sflv1", "32")
    half, half_ckpt = _run(tmp_path, "sflv1", "bf16-mixed")
    for key in ("tensor_bytes_sent", "tensor_bytes_received"):  # the same float32 tensors on the wire
        assert half[key] == full[key], key
    assert all(t.dtype == torch.float32 for t in _float_tensors(half_ckpt))
    moved = max(float((half_ckpt["server_half"][k] - v).abs().max()) for k, v in full_ckpt["server_half"].items())
    assert 0 < moved < 0.05  # bf16 rounding changed the numbers, a little
    assert half["test_accuracy"] > 0.6


@pytest.mark.parametrize(
    ("protocol", "clients"),
    [("sflv2", 2), ("sl", 2), ("fedavg", 2), ("centralized", 1), ("fedsl", 2), ("pyvertical", 2)],
)
def test_every_protocol_trains_in_bf16(protocol: str, clients: int, tmp_path: Path) -> None:
    summary, ckpt = _run(tmp_path, protocol, "bf16-mixed", clients)
    assert summary["status"] == "completed"
    assert summary["test_accuracy"] > 0.3  # one round on the 8x8 digits, 10 classes
    assert all(t.dtype == torch.float32 for t in _float_tensors(ckpt))
