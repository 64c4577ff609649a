"""Everything about a run that can be checked before any process starts.

``splitfed run`` calls :func:`check_run` in the parent: a bad dataset path, partition,
cut or protocol option is then one clear error, with no process started and no run
folder left behind.
"""

from __future__ import annotations

from typing import Any

from splitfed.config import RunConfig
from splitfed.data.augment import check_augment, make_augment
from splitfed.data.datasets import DatasetIndex, load_index
from splitfed.data.partition import parse_scheme
from splitfed.data.shards import carve_validation, client_rows
from splitfed.errors import ConfigError, DataError
from splitfed.models import DEFAULT_MODEL, check_cut
from splitfed.protocol import ProtocolSpec


def check_run(config: RunConfig, spec: ProtocolSpec, *, with_data: bool = True) -> None:
    """Raise ConfigError or DataError for what would fail once the run had started."""
    config = config.replace(options=spec.option_values(config.options))  # the protocol's options, checked
    check_tensorboard(config)
    parse_scheme(config.partition)
    check_augment(config.augment)
    if spec.augments == "bands" and config.augment not in ("auto", "none", "standard", "standard-noflip"):
        raise ConfigError(
            f"--augment {config.augment}: in {spec.name} each client holds only a band of every example, and a "
            "function of your own augments whole examples; use --augment standard, standard-noflip or none"
        )
    if not spec.uses_model and config.model != DEFAULT_MODEL:
        raise ConfigError(
            f"--model {config.model}: {spec.name} builds its own networks (see `splitfed run {spec.name} --help`); "
            "--model does not apply to it"
        )
    if config.val_fraction and not spec.validates:
        raise ConfigError(
            f"--val-fraction: {spec.name} does not validate yet (its parties hold parts of every example); "
            "leave it at 0"
        )
    check_smashed(config, spec)
    index = load_index(config.data) if with_data else None
    if index is not None and not spec.uses_model and len(index.shape) != 3:
        raise ConfigError(
            f"{spec.name} splits images (channels, height, width), but {config.data} holds examples of shape "
            f"{tuple(index.shape)}; use sflv1, sflv2, sl, fedavg or centralized with a model of your own"
        )
    if index is not None and spec.augments == "examples":
        make_augment(config.augment, index.kind, index.shape)
    if spec.validate is not None:
        spec.validate(config, index)
    elif index is not None:
        check_split_model(config, index)
        check_partition(config, index, config.clients if spec.distributed else 1)


def check_smashed(config: RunConfig, spec: ProtocolSpec) -> None:
    """Compression and defences of the smashed data exist only where a protocol sends it the SplitFed way."""
    given = [
        flag
        for flag, on in (
            ("--wire-compress", config.wire_compress != "none"),
            ("--dp-clip", config.dp_clip),
            ("--dp-noise", config.dp_noise),
            ("--nopeek", config.nopeek),
        )
        if on
    ]
    if given and config.privacy != "none":
        given = [f"--privacy {config.privacy}"]
    if given and not spec.smashed:
        raise ConfigError(f"{given[0]} applies to sflv1, sflv2 and sl only, not to {spec.name}; leave it out")


def check_tensorboard(config: RunConfig) -> None:
    """``--tensorboard`` needs the optional extra installed."""
    import importlib.util

    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "--tensorboard needs TensorBoard: pip install 'splitfed[tensorboard]' (or leave the flag out)"
        )


def check_split_model(config: RunConfig, index: DatasetIndex) -> int:
    return check_cut(config.model, config.cut, index.shape, len(index.classes))


def check_partition(config: RunConfig, index: Any, parts: int) -> None:
    """Every part (client or group) gets training and test rows under the run's split, and validation
    rows with --val-fraction."""
    client_rows(index, parts, 0, config.partition, config.test_split, config.test_fraction, config.seed)
    if not config.val_fraction:
        return
    for part in range(parts):
        train, _ = client_rows(
            index, parts, part, config.partition, config.test_split, config.test_fraction, config.seed
        )
        if not len(carve_validation(train, index.labels, config.val_fraction, config.seed, part)[1]):
            raise DataError(
                f"--val-fraction {config.val_fraction}: client {part} has too few training rows to hold any out; "
                "raise --val-fraction or use fewer clients"
            )
