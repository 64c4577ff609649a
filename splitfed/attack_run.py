"""``splitfed attack RUN``: the reconstruction attack (:mod:`splitfed.attack`) on a finished run.

The client half is the run's checkpointed one; its defences (clipping, noise) are the run's own.
Without ``--aux`` the attacker and the victims share out the run's held-out test rows, which no
party trained on: by person where the data has person ids (the attacker holds half the people,
the victims are the others), else by row. With ``--aux DATA`` the attacker holds every row of
another dataset, and the victims are the run's held-out test rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from splitfed.attack import linked, reconstruct, save_figure
from splitfed.config import RunConfig
from splitfed.errors import ConfigError, DataError
from splitfed.files import atomic_write_json

#: the protocols whose clients send cut activations (and get a gradient back): what the attacks read
SMASHED = ("sflv1", "sflv2", "sl")


def _client_half(run: Path, facts: dict[str, Any], config: RunConfig) -> torch.nn.Module:
    from splitfed.models import build_model, split_model

    ckpt = run / "checkpoint.pt"
    if not ckpt.exists():
        raise ConfigError(f"{ckpt} does not exist (was --checkpoint-every 0?)")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if "client_half" not in state:
        raise ConfigError(f"{run} is a {config.protocol} run: the attack needs a client half (sflv1, sflv2, sl)")
    full = build_model(config.model, tuple(facts["input_shape"]), len(facts["classes"]), config.seed)
    half = split_model(full, facts["cut"])[0]
    mine = half.state_dict()  # with --labels client the checkpoint's client part also holds the head
    half.load_state_dict({k: v for k, v in state["client_half"].items() if k in mine})
    return half


def _rows(config: RunConfig, aux: str | None, victims: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(the attacker's images, the victims' images, how they were chosen)."""
    from splitfed.data.datasets import load_index
    from splitfed.data.partition import split_train_test

    index = load_index(config.data)
    _, test = split_train_test(index.labels, index.subjects, config.test_split, config.test_fraction, config.seed)
    if aux is not None:
        other = load_index(aux)
        if tuple(other.shape) != tuple(index.shape):
            raise DataError(f"--aux {aux} holds examples of shape {tuple(other.shape)}, the run's are {index.shape}")
        return other.load(np.arange(len(other)))[0], index.load(test[:victims])[0], f"all {len(other)} rows of {aux}"
    if index.subjects is not None:
        people = sorted({index.subjects[i] for i in test})
        known = set(people[: len(people) // 2])
        mine = np.array([i for i in test if index.subjects[i] in known])
        theirs = np.array([i for i in test if index.subjects[i] not in known])
        how = f"held-out test rows of {len(known)} people; victims: {len(people) - len(known)} others"
    else:
        mine, theirs = test[: len(test) // 2], test[len(test) // 2 :]
        how = "half the held-out test rows; victims: the other half"
    if not len(mine) or not len(theirs):
        raise DataError("the run's held-out test rows are too few to share between attacker and victims; give --aux")
    return index.load(mine)[0], index.load(theirs[:victims])[0], how


def attack_run(
    run: Path,
    *,
    aux: str | None = None,
    victims: int = 64,
    width: int = 32,
    epochs: int = 20,
    depth: int = 0,
    lr: float = 2e-3,
    sends: int = 1,
    seed: int = 0,
    out: Path | None = None,
) -> dict[str, Any]:
    """Attack the run; write attack.json and reconstructions.png into ``out`` (default RUN/attack).
    ``width``, ``depth``, ``epochs``, ``lr``: the decoder (:func:`splitfed.attack.train_decoder`); ``sends``:
    how many noisy sends of each victim the attacker links and averages (:func:`splitfed.attack.linked`)."""
    from splitfed.protocols.defences import Defence

    run = Path(run)
    if not (run / "config.json").exists():
        raise ConfigError(f"{run} is not a run folder: it has no config.json")
    config = RunConfig.from_file(run / "config.json")
    facts = json.loads((run / "config.json").read_text())
    half = _client_half(run, facts, config)
    aux_x, victim_x, how = _rows(config, aux, victims)
    defence = Defence.of(config)
    release = linked(defence.release, sends) if defence.clip or defence.noise else None
    decoder = {"width": width, "depth": depth, "epochs": epochs, "lr": lr}
    result = reconstruct(half, aux_x, victim_x, release=release, seed=seed, **decoder)
    out = out or run / "attack"
    report = {
        "run": str(run),
        "cut": facts["cut"],
        "defences": {"dp_clip": config.dp_clip, "dp_noise": config.dp_noise, "nopeek": config.nopeek},
        "attacker": how,
        "attacker_rows": len(aux_x),
        "victims": len(victim_x),
        "decoder": {**decoder, "train_mse": result.train_mse},
        "sends_averaged": sends if release is not None else 1,
        "ssim": result.ssim,
        "psnr": result.psnr,
        "mean_image_ssim": result.baseline_ssim,
    }
    atomic_write_json(out / "attack.json", report)
    save_figure(result, out / "reconstructions.png")
    return report


def _three_parts(config: RunConfig, facts: dict[str, Any], state: dict[str, Any] | None, head: dict | None) -> tuple:
    """(front, middle, head) of a label-private run: as every party builds them from the seed, or (given
    the checkpoint's ``state``) as trained; ``head``: a client's own head (--heads local), else the checkpoint's."""
    from splitfed.models import build_model, split_three

    full = build_model(config.model, tuple(facts["input_shape"]), len(facts["classes"]), config.seed)
    parts = split_three(full, int(facts["cut"]), int(facts.get("head_blocks", 1)))
    if state is not None:
        full.load_state_dict({**full.state_dict(), **state["client_half"], **state["server_half"]})
    if head is not None:
        parts[2].load_state_dict(head)
    return tuple(part.eval() for part in parts)


def _client_head(run: Path, round: int | None) -> tuple[str, dict]:
    """(a client's name, its own head) from the run's client state files (--heads local: the server has none),
    saved at the checkpoint's ``round`` (a head of another round does not belong with its front and middle)."""
    files = sorted((run / "clients").glob("*.pt"))
    if not files:
        raise ConfigError(
            f"{run} kept its heads on the clients (--heads local): the attack on the gradients a client returns "
            f"needs that client's head, from its own state file, and {run / 'clients'} holds none; copy a client's "
            "state file (the one its --state-dir holds) there"
        )
    saved = {f.stem: torch.load(f, map_location="cpu", weights_only=True) for f in files}
    for name, got in saved.items():
        if round is None or got.get("round") == round:
            return name, got["state"]["head"]
    rounds = {name: got.get("round") for name, got in saved.items()}
    raise ConfigError(
        f"the checkpoint is of round {round}, but the client state files in {run / 'clients'} are of rounds {rounds}; "
        "copy a client's state file saved at the checkpoint's round"
    )


def label_attack_run(run: Path, *, victims: int = 256, seed: int = 0, out: Path | None = None) -> dict[str, Any]:
    """The label attack (:mod:`splitfed.label_attack`) on a finished run; writes label_attack.json into
    ``out`` (default RUN/attack). Without --labels client the labels crossed the wire: nothing to infer."""
    run = Path(run)
    if not (run / "config.json").exists():
        raise ConfigError(f"{run} is not a run folder: it has no config.json")
    config = RunConfig.from_file(run / "config.json")
    facts = json.loads((run / "config.json").read_text())
    if config.protocol not in SMASHED:
        raise ConfigError(
            f"{run} is a {config.protocol} run: no activations and no returned gradients cross its wire; "
            f"the label attack reads split runs ({', '.join(SMASHED)})"
        )
    report: dict[str, Any] = {"run": str(run), "labels": facts.get("labels", "server")}
    if report["labels"] != "client":
        report.update(accuracy=1.0, note="the labels travel with the activations: the server reads them")
    else:
        report.update(_private_attacks(run, config, facts, victims, seed))
    atomic_write_json((out or run / "attack") / "label_attack.json", report)
    return report


def _attacks(
    parts: tuple, x: torch.Tensor, y: torch.Tensor, classes: int, settings: dict, sends: int, seed: int
) -> dict:
    """The label attacks on one set of weights: the returned gradients clustered (``accuracy``, with its
    baselines), and (``sends`` > 1) the mean of an example's ``sends`` noisy returns clustered (``linked``);
    the middle's outputs clustered (``features``); the head applied to them (``classify``).
    ``settings``: head_input_gradients' keywords (the run's batch size and defences)."""
    from splitfed.label_attack import (
        classify_attack,
        feature_attack,
        head_input_gradients,
        infer_labels,
        linked_gradients,
        middle_outputs,
    )

    front, middle, head = parts
    grads = head_input_gradients(front, middle, head, x, y, **settings)
    result: dict[str, Any] = infer_labels(grads, y, classes, seed=seed).to_dict()
    if sends > 1:
        linked = linked_gradients(parts, x, y, sends, **settings)
        result.update(linked=infer_labels(linked, y, classes, seed=seed).accuracy, linked_sends=sends)
    outs = middle_outputs(front, middle, x, release=settings["release"])
    result["features"] = feature_attack(outs, y, classes, seed=seed).accuracy
    result["classify"] = classify_attack(head, outs, y)
    return result


def _private_attacks(run: Path, config: RunConfig, facts: dict[str, Any], victims: int, seed: int) -> dict[str, Any]:
    """The label attacks on a label-private run's held-out rows, at its first round and at its checkpoint."""
    from splitfed.data.datasets import load_index
    from splitfed.data.partition import split_train_test
    from splitfed.protocols.defences import Defence
    from splitfed.protocols.label_private import gradient_defence, heads_local

    ckpt = run / "checkpoint.pt"
    if not ckpt.exists():
        raise ConfigError(f"{ckpt} does not exist (was --checkpoint-every 0?)")
    index = load_index(config.data)
    _, test = split_train_test(index.labels, index.subjects, config.test_split, config.test_fraction, config.seed)
    x, y = index.load(test[:victims])
    defence, guard = Defence.of(config), gradient_defence(config)
    release = defence.release if defence.clip or defence.noise else None
    local = heads_local(config)
    report: dict[str, Any] = {"heads": "local" if local else "averaged", "label_clip": guard.clip}
    report["label_noise"] = guard.noise
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    owner, head = _client_head(run, state.get("round")) if local else (None, None)
    settings = {
        "batch": config.batch_size,
        "release": release,
        "head_release": guard.release if guard.active else None,
        "smoothing": config.label_smoothing,
        "precision": config.precision,
    }
    for when, weights in (("first_round", None), ("checkpoint", state)):
        parts = _three_parts(config, facts, weights, head if weights is not None else None)
        # a client sends each training row once per local epoch, with fresh noise each time
        sends = config.epochs * config.local_epochs if guard.noise else 1
        report[when] = _attacks(parts, x, y, len(facts["classes"]), settings, sends, seed)
        if local and weights is not None:  # the server never had this head: it cannot classify with it
            report[when]["classify"] = None
    report["accuracy"] = max(report["first_round"]["accuracy"], report["checkpoint"]["accuracy"])
    report["rows"] = f"{len(y)} held-out test rows, as the client would return their gradients in training"
    if owner is not None:
        report["head_of"] = owner
    return report
