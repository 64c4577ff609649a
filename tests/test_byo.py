"""Bring your own model, data and augmentation: by import path, resolved in every process."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from splitfed import registry
from splitfed.checks import check_run
from splitfed.config import RunConfig
from splitfed.data.augment import StandardAugment, batch_generator, make_augment
from splitfed.data.datasets import load_index
from splitfed.errors import ConfigError, DataError
from splitfed.models import build_model, check_cut, split_model
from splitfed.testing import run_in_threads

REPO = Path(__file__).resolve().parents[1]
TABULAR = f"{REPO / 'examples' / 'tabular.py'}"
MOBILENET = f"{REPO / 'examples' / 'torchvision_mobilenet.py'}:mobilenet_v3"

TINY = """
import torch
from torch import nn

def tiny(shape, n_classes):
    c, h, w = shape
    features = nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU())
    return [features, nn.Sequential(nn.Flatten(), nn.Linear(8 * h * w, n_classes))]

tiny.default_cut = 1

def mlp(shape, n_classes):
    return nn.Sequential(nn.Sequential(nn.Linear(shape[0], 32), nn.ReLU()), nn.Linear(32, n_classes))

def jitter(x, generator):
    return x + 0.05 * torch.randn(x.shape, generator=generator)

def not_blocks(shape, n_classes):
    return "a model"

def one_block(shape, n_classes):
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, n_classes)))

def wrong_classes(shape, n_classes):
    return [nn.Flatten(), nn.Linear(64, n_classes + 1)]

def broken(shape, n_classes):
    raise RuntimeError("no such layer")

def rows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    return x, (x[:, 0] > 0).long(), [f"p{i % 6}" for i in range(60)]

def rows_as_dataset():
    x, y, subjects = rows()
    return torch.utils.data.TensorDataset(x, y)

def no_labels():
    return {"x": torch.zeros(3, 2)}
"""


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of the user's, ``mine``, beside the command (the current folder)."""
    (tmp_path / "mine.py").write_text(textwrap.dedent(TINY))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_model_factory_splits_like_a_built_in_and_split_equals_unsplit(user_code: Path) -> None:
    whole = build_model("mine:tiny", (1, 8, 8), 10, seed=4).eval()
    again = build_model("mine:tiny", (1, 8, 8), 10, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(whole.parameters(), again.parameters(), strict=True))
    x = torch.randn(5, 1, 8, 8)
    client, server = split_model(whole, check_cut("mine:tiny", None, (1, 8, 8), 10))
    assert len(client) == 1
    assert torch.allclose(server(client(x)), whole(x))


def test_the_torchvision_example_cuts_at_every_block_and_split_equals_unsplit() -> None:
    whole = build_model(MOBILENET, (1, 64, 128), 7, seed=1).eval()
    x = torch.randn(3, 1, 64, 128)
    for cut in range(1, len(whole)):
        client, server = split_model(whole, check_cut(MOBILENET, cut, (1, 64, 128), 7))
        assert torch.allclose(server(client(x)), whole(x), atol=1e-6)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("mine:nothing", "mine has no attribute 'nothing'"),
        ("nowhere.models:tiny", "no module named 'nowhere'"),
        ("missing.py:tiny", "missing.py does not exist"),
        ("mine:not_blocks", "returned str; a model factory returns its blocks"),
        ("mine:one_block", "returned 1 block"),
        ("mine:wrong_classes", r"outputs of shape \(2, 11\)"),
        ("mine:broken", "failed when called as factory.*no such layer"),
        ("vgg16", "neither a built-in model"),
    ],
)
def test_a_bad_model_path_is_one_clear_error_before_any_process(user_code: Path, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        check_run(RunConfig(protocol="sflv1", model=model), registry.get("sflv1"))
    assert model.split(":")[0] in str(err.value)


def test_data_from_a_function_as_tuple_dict_or_dataset(user_code: Path) -> None:
    index = load_index("mine:rows")
    assert index.kind == "custom" and index.shape == (5,) and len(index) == 60
    assert index.classes == ["0", "1"] and index.subjects is not None and len(set(index.subjects)) == 6
    x, y = index.load([0, 1, 2])
    expected_x, expected_y, _ = __import__("mine").rows()
    assert torch.equal(x, expected_x[:3]) and torch.equal(y, expected_y[:3])  # used as given: no rescaling
    from_dataset = load_index("mine:rows_as_dataset")
    assert torch.equal(from_dataset.load(range(60))[0], index.load(range(60))[0]) and from_dataset.subjects is None
    with pytest.raises(DataError, match=r"without \['y'\]"):
        load_index("mine:no_labels")


def test_a_built_in_image_model_on_a_table_says_what_to_do() -> None:
    config = RunConfig(protocol="sflv1", data=f"{TABULAR}:breast_cancer")
    with pytest.raises(ConfigError, match=r"--model cnn takes images .* shape \(30,\); give a model of your own"):
        check_run(config, registry.get("sflv1"))
    with pytest.raises(ConfigError, match="--augment standard works on images"):
        check_run(config.replace(model=f"{TABULAR}:mlp", augment="standard"), registry.get("sflv1"))


def test_augmentation_is_seeded_per_batch_and_the_flip_is_a_mirror_image() -> None:
    x = torch.linspace(-1, 1, 2 * 8 * 12).reshape(2, 1, 8, 12)
    standard = make_augment("standard", "images", (1, 8, 12))
    a = standard(x, batch_generator(0, 1, 2, 0, 5))
    assert torch.equal(a, standard(x, batch_generator(0, 1, 2, 0, 5)))
    assert not torch.equal(a, standard(x, batch_generator(0, 1, 2, 0, 6)))
    only_flip = StandardAugment(flip=True, degrees=0, scale=(1, 1), shift=0, brightness=0, contrast=(1, 1))
    flipped = only_flip(x, batch_generator(0, 0, 1, 0, 0))
    for image, out in zip(x, flipped, strict=True):  # each image is itself or its mirror, nothing else
        assert torch.allclose(out, image, atol=1e-5) or torch.allclose(out, image.flip(-1), atol=1e-5)
    assert make_augment("auto", "images", (1, 8, 12)) is not None
    assert make_augment("auto", "digits", (1, 8, 8)) is None and make_augment("auto", "custom", (5,)) is None


def test_a_one_argument_pipeline_is_applied_per_example_and_seeded(user_code: Path) -> None:
    (user_code / "pipeline.py").write_text(
        "from torchvision.transforms import v2\nflip = v2.RandomHorizontalFlip(0.5)\n"
    )
    augment = make_augment("pipeline:flip", "images", (1, 4, 6))
    x = torch.arange(8 * 24, dtype=torch.float32).reshape(8, 1, 4, 6)
    a, b = augment(x, batch_generator(0, 0, 1, 0, 0)), augment(x, batch_generator(0, 0, 1, 0, 0))
    assert torch.equal(a, b)
    mirrored = [not torch.equal(o, i) for o, i in zip(a, x, strict=True)]
    assert 0 < sum(mirrored) < 8  # drawn per example, not once for the batch


def test_protocols_that_hold_bands_refuse_an_augmentation_of_whole_examples() -> None:
    for name in ("fedsl", "pyvertical"):
        with pytest.raises(ConfigError, match="holds only a band of every example"):
            check_run(RunConfig(protocol=name, augment="pipeline:flip"), registry.get(name), with_data=False)
        check_run(RunConfig(protocol=name, augment="standard"), registry.get(name), with_data=False)


def test_bring_your_own_over_real_processes(splitfed_cmd, user_code: Path) -> None:
    """A table from a file's function, an MLP and an augmentation from a module beside the command, across
    3 processes: each process resolves every path itself."""
    out = user_code / "run"
    res = subprocess.run(
        [
            *splitfed_cmd,
            "run",
            "sflv1",
            "--clients",
            "2",
            "--epochs",
            "3",
            "--data",
            f"{TABULAR}:breast_cancer",
            "--model",
            "mine:mlp",
            "--augment",
            "mine:jitter",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.85
    assert config["input_shape"] == [30] and config["classes"] == ["malignant", "benign"]
    assert config["augment"] == "mine:jitter" and config["model"] == "mine:mlp"


def test_a_conv_factory_and_the_standard_augmentation_train_fedavg(user_code: Path) -> None:
    config = RunConfig(protocol="fedavg", clients=2, epochs=2, model="mine:tiny", augment="standard-noflip", timeout=30)
    summary = json.loads(run_in_threads(config, user_code / "run").read_text())
    assert summary["test_accuracy"] > 0.5


def test_an_unsplit_factory_model_equals_sflv1_with_one_client(user_code: Path, tmp_path: Path) -> None:
    """The equivalence guarantee holds for a user's model as for the built-ins."""
    base = RunConfig(protocol="sflv1", clients=1, epochs=2, model="mine:tiny", optimizer="sgd", lr=0.05, timeout=30)
    split = json.loads(run_in_threads(base, tmp_path / "split").read_text())
    central = json.loads(run_in_threads(base.replace(protocol="centralized"), tmp_path / "central").read_text())
    assert split["train_loss"] == pytest.approx(central["train_loss"], abs=1e-5)
    assert split["test_accuracy"] == central["test_accuracy"]


@pytest.mark.parametrize("protocol", ["fedsl", "pyvertical"])
def test_protocols_with_networks_of_their_own_refuse_a_model_and_tables(protocol: str) -> None:
    with pytest.raises(ConfigError, match="builds its own networks"):
        check_run(RunConfig(protocol=protocol, model=MOBILENET), registry.get(protocol))
    with pytest.raises(ConfigError, match=rf"{protocol} splits images .* shape \(30,\)"):
        check_run(RunConfig(protocol=protocol, data=f"{TABULAR}:breast_cancer"), registry.get(protocol))
