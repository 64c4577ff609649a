"""``splitfed evaluate RUN``: rebuild a run's model from its folder and test it.

The run folder holds everything needed: ``config.json`` (the model, the cut, the
classes, the input shape, the data and its split) and the weights the server
checkpointed. Which weights depend on the protocol: both halves (sflv1, sflv2, sl), the
whole model (fedavg, centralized), or every segment's sub-network and the classifier
(fedsl). A PyVertical run keeps each band's head with its owner, so its folder cannot
rebuild the model; that is said, not guessed around.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from splitfed.config import RunConfig
from splitfed.devices import use_precision
from splitfed.errors import ConfigError, DataError
from splitfed.files import atomic_write_json
from splitfed.metrics import Tally

log = logging.getLogger(__name__)

BATCH = 256


def evaluate_run(
    run: Path,
    *,
    data: str | None = None,
    checkpoint: str | Path | None = None,
    out: Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Test the run's model; write ``evaluation.json`` and ``confusion.png`` into ``out``.

    Without ``data``, the rows are the run's own held-out test rows (every client's, by the
    run's split and seed). With ``data``, every row of that dataset, which must have the
    run's classes and input shape.
    """
    run = Path(run)
    model = load_model(run, checkpoint=checkpoint, device=device)
    config, classes, predict, path = model.config, model.classes, model.predict, model.checkpoint
    x, y, source = _rows(config, data, classes, model.shape)
    tally = Tally(len(classes))
    with torch.no_grad():
        for start in range(0, len(y), BATCH):
            xb, yb = x[start : start + BATCH].to(device), y[start : start + BATCH].to(device)
            logits = predict(xb)
            tally.add(logits, yb, float(F.cross_entropy(logits, yb, reduction="sum")))
    report = _report(tally, classes)
    report.update(
        run=str(run),
        protocol=config.protocol,
        checkpoint=str(path),
        round=model.round,
        data=source,
        rows=len(y),
    )
    out = Path(out) if out is not None else run / "evaluation"
    atomic_write_json(out / "evaluation.json", report)
    try:
        from splitfed.plots import plot_confusion

        title = f"{config.protocol}, round {model.round}: accuracy {report['accuracy']:.3f} on {len(y)} rows"
        plot_confusion(np.asarray(report["confusion"]), classes, out / "confusion.png", title=title)
    except Exception as exc:  # the figures are written; a plot must not hide them
        log.warning("could not draw confusion.png: %s", exc)
    return report


@dataclass(frozen=True)
class LoadedModel:
    """A run's model, rebuilt: ``predict`` maps a batch of inputs to logits."""

    config: RunConfig
    classes: list[str]
    shape: tuple[int, ...]
    predict: Callable[[torch.Tensor], torch.Tensor]
    checkpoint: Path
    round: int | None


def load_model(run: Path, *, checkpoint: str | Path | None = None, device: str = "cpu") -> LoadedModel:
    """Rebuild the model of run folder ``run`` from its config.json and checkpoint (default the last)."""
    run = Path(run)
    facts = _facts(run)
    config = RunConfig.from_file(run / "config.json")
    named = {"last": "checkpoint.pt", "best": "best.pt"}
    which = "last" if checkpoint is None else str(checkpoint)
    path = run / named[which] if which in named else Path(which)
    if not path.exists():
        why = (
            "the run kept a best.pt only with --val-fraction" if path.name == "best.pt" else "was --checkpoint-every 0?"
        )
        raise ConfigError(f"{path} does not exist ({why})")
    state = torch.load(path, map_location="cpu", weights_only=True)  # our own file, and weights only all the same
    classes, shape = list(facts["classes"]), tuple(facts["input_shape"])
    use_precision(torch.device(device), "32")  # these figures are float32 whatever the run's --precision
    predict = _predictor(config, facts, state, classes, shape, torch.device(device))
    return LoadedModel(config, classes, shape, predict, path, state.get("round"))


def _facts(run: Path) -> dict[str, Any]:
    path = run / "config.json"
    if not path.exists():
        raise ConfigError(f"{run} is not a run folder: it has no config.json")
    facts = json.loads(path.read_text())
    if "classes" not in facts or "input_shape" not in facts:
        raise ConfigError(f"{path} records no classes or input shape: the run stopped before its clients joined")
    return facts


def _predictor(
    config: RunConfig, facts: dict[str, Any], state: dict[str, Any], classes: list[str], shape: tuple, device: Any
) -> Any:
    """A function from a batch of inputs to logits, built from the checkpoint's weights."""
    from splitfed.models import build_model

    n_classes = len(classes)
    if config.option("heads", "averaged") == "local":
        raise ConfigError(
            "this run kept each client's head on the client (--heads local): its checkpoint holds no head, so there "
            "is no one model to evaluate; each client tested its own rows with its own head (summary.json)"
        )
    if "client_half" in state and "server_half" in state:
        model = build_model(config.model, shape, n_classes, config.seed)
        # the halves' keys are the whole model's (with --labels client the client part holds the head too)
        model.load_state_dict({**state["client_half"], **state["server_half"]})
        return model.to(device).eval()
    if "model" in state:
        model = build_model(config.model, shape, n_classes, config.seed)
        model.load_state_dict(state["model"])
        return model.to(device).eval()
    if "segments" in state:
        return _fedsl_predictor(config, state["segments"], n_classes, shape, device)
    if "top" in state:
        raise ConfigError(
            f"a {config.protocol} run folder holds only the server's top: each feature band's head stays with "
            "its owner, so the model cannot be rebuilt here (by design: the server never sees the bands)"
        )
    raise ConfigError(
        f"the checkpoint of this {config.protocol} run holds no weights splitfed can rebuild a model from"
    )


def _fedsl_predictor(config: RunConfig, segments: dict, n_classes: int, shape: tuple, device: Any) -> Any:
    from splitfed.models.rnn import build_segments, segment_bounds, to_sequence

    order = config.option("sequence", "rows")
    k = int(config.option("segments", 2))
    _, length, features = to_sequence(torch.zeros(1, *shape), order).shape
    bounds = segment_bounds(length, k)
    nets, head = build_segments(
        config.option("cell", "gru"),
        features,
        int(config.option("hidden", 128)),
        n_classes,
        k,
        config.seed,
        encoder=config.option("encoder", "none"),  # runs from before the option had no encoder
        channels=shape[0],
    )
    for position, net in enumerate(nets):
        weights = segments[position]
        net.load_state_dict({n: v for n, v in weights.items() if not n.startswith("head.")})
        if position == k - 1:
            head.load_state_dict({n[5:]: v for n, v in weights.items() if n.startswith("head.")})
    nets = [net.to(device).eval() for net in nets]
    head = head.to(device).eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        seq = to_sequence(x, order)
        state = nets[0].zero_state(len(x), device)
        for net, (start, stop) in zip(nets, bounds, strict=True):
            state = net(seq[:, start:stop], state)
        return head(state[0][-1])

    return predict


def _rows(
    config: RunConfig, data: str | None, classes: list[str], shape: tuple
) -> tuple[torch.Tensor, torch.Tensor, str]:
    from splitfed.data.datasets import load_index
    from splitfed.data.partition import split_train_test

    source = data or config.data
    index = load_index(source)
    if tuple(index.shape) != tuple(shape):
        raise DataError(f"{source} holds examples of shape {tuple(index.shape)}; the run was trained on {shape}")
    unknown = sorted(set(index.classes) - set(classes))
    if unknown:
        raise DataError(f"{source} has classes {unknown} that the run never saw; it knows {classes}")
    if data is None:
        _, rows = split_train_test(index.labels, index.subjects, config.test_split, config.test_fraction, config.seed)
    else:
        rows = np.arange(len(index))
    x, y = index.load(rows)
    remap = torch.tensor([classes.index(c) for c in index.classes], dtype=torch.long)
    what = f"{source} (the run's {len(rows)} held-out test rows)" if data is None else f"{source} (all rows)"
    return x, remap[y], what


def _report(tally: Tally, classes: list[str]) -> dict[str, Any]:
    confusion = np.asarray(tally.confusion)
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        predicted, actual = int(confusion[:, i].sum()), int(confusion[i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return {
        "accuracy": tally.accuracy,
        "macro_f1": tally.macro_f1,
        "loss": tally.loss,
        "classes": classes,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
