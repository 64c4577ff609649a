"""SFLv1, SFLv2, vanilla SL and FedAvg with one client equal centralised training of the unsplit model.

Same initial weights, same batches in the same order, SGD with momentum: after several
rounds the protocol's halves must match the centralised model to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from splitfed.config import RunConfig
from splitfed.data.shards import batch_order, client_shard
from splitfed.models import build_model
from splitfed.testing import run_in_threads


def centralised(config: RunConfig) -> dict[str, torch.Tensor]:
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    model = build_model(config.model, shard.shape, len(shard.classes), config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    for rnd in range(1, config.epochs + 1):
        for epoch in range(config.local_epochs):
            for rows in batch_order(
                len(shard.train_y), config.batch_size, seed=config.seed, client=0, round=rnd, epoch=epoch
            ):
                loss = F.cross_entropy(model(shard.train_x[rows]), shard.train_y[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return model.state_dict()


@pytest.mark.parametrize("protocol", ["sflv1", "sflv2", "sl", "fedavg", "centralized"])
def test_one_client_equals_centralised(protocol: str, tmp_path: Path) -> None:
    config = RunConfig(
        protocol=protocol,
        clients=1,
        epochs=3,
        local_epochs=2,
        batch_size=64,
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        seed=11,
        timeout=30,
    )
    assert_trains_as_centralised(config, tmp_path)


def assert_trains_as_centralised(config: RunConfig, tmp_path: Path) -> dict:
    """Run ``config`` (one client, seed 11) in threads and check its weights against :func:`centralised`'s to
    1e-5, after training has moved them; return the run's checkpoint."""
    run_in_threads(config, tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # split protocols keep two halves; the whole-model baselines keep one model
    trained = ckpt["model"] if "model" in ckpt else {**ckpt["client_half"], **ckpt["server_half"]}
    reference = centralised(config)
    assert trained.keys() == reference.keys()
    initial = build_model("cnn", (1, 8, 8), 10, 11).state_dict()
    assert max(float((reference[k] - initial[k]).abs().max()) for k in reference) > 1e-2  # training moved them
    for k, ref in reference.items():
        assert torch.allclose(trained[k], ref, atol=1e-5), k
    return ckpt


def test_sflv2_orders_both_learn(tmp_path: Path) -> None:
    """Both turn orders run with 3 clients and give the same number of training samples."""
    import json

    accs = {}
    for order in ("sequential", "interleaved"):
        config = RunConfig(protocol="sflv2", clients=3, epochs=2, seed=1, options={"order": order}, timeout=30)
        summary = json.loads(run_in_threads(config, tmp_path / order).read_text())
        accs[order] = summary["test_accuracy"]
    assert min(accs.values()) > 0.5, accs
