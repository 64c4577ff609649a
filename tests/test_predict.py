"""`splitfed predict RUN PHOTO...`: a face photo, cropped as the training data was, then classified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from splitfed.config import RunConfig
from splitfed.data.datasets import load_index
from splitfed.errors import ConfigError
from splitfed.evaluate import load_model
from splitfed.predict import predict_photos
from splitfed.testing import run_in_threads

sys.path.insert(0, str(Path(__file__).parent))
import kdef_tree  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Real photos in a KDEF tree, cropped by `splitfed preprocess`'s pipeline, and a run trained on the crops."""
    from splitfed.preprocessing.pipeline import Options, run

    root = tmp_path_factory.mktemp("predict")
    kdef_tree.build_few(root / "photos", count=10)
    run(root / "photos", root / "crops", Options(workers=1, progress=False))
    config = RunConfig(protocol="centralized", clients=1, epochs=2, data=str(root / "crops"), test_fraction=0.3)
    run_in_threads(config, root / "run")
    import skimage.data

    Image.fromarray(skimage.data.brick()).convert("RGB").save(root / "brick.jpg")
    return root


def test_a_photo_gets_the_prediction_of_its_own_training_crop(trained: Path) -> None:
    photos = [
        trained / "photos" / "KDEF" / "AF01" / "AF01ANS.JPG",
        trained / "photos" / "KDEF" / "AF02" / "AF02AFS.JPG",
    ]
    predictions = predict_photos(trained / "run", photos)
    model = load_model(trained / "run")
    index = load_index(str(trained / "crops"))
    for photo, prediction in zip(photos, predictions, strict=True):
        assert prediction.error is None and sum(prediction.probabilities.values()) == pytest.approx(1.0)
        row = index.ids.index(photo.stem)  # the crop preprocessing saved for this photo
        with torch.no_grad():
            expected = torch.softmax(model.predict(index.load([row])[0]), dim=1)[0]
        got = torch.tensor([prediction.probabilities[c] for c in model.classes])
        assert torch.allclose(got, expected, atol=1e-6)
        assert prediction.label == model.classes[int(expected.argmax())]


def test_no_face_is_refused_by_name_and_the_command_says_so(splitfed_cmd, trained: Path) -> None:
    good = trained / "photos" / "KDEF" / "AF01" / "AF01ANS.JPG"
    res = subprocess.run(
        [*splitfed_cmd, "predict", str(trained / "run"), str(good), str(trained / "brick.jpg"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert f"error: {trained / 'brick.jpg'}: no face found" in res.stderr
    listed = json.loads(res.stdout)
    assert [p["label"] is None for p in listed] == [False, True]
    only_bad = subprocess.run(
        [*splitfed_cmd, "predict", str(trained / "run"), str(trained / "brick.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert only_bad.returncode == 1 and "no photo could be classified" in only_bad.stderr


def test_a_model_of_tables_is_refused(tmp_path: Path) -> None:
    table = Path(__file__).resolve().parents[1] / "examples" / "tabular.py"
    config = RunConfig(protocol="centralized", clients=1, epochs=1, data=f"{table}:breast_cancer", model=f"{table}:mlp")
    run_in_threads(config, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"inputs of shape \(30,\), not images"):
        predict_photos(tmp_path / "run", [tmp_path / "x.jpg"])
