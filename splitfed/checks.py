"""Everything about a run that can be checked before any process starts.

``splitfed run`` calls :func:`check_run` in the parent: a bad dataset path, partition,
cut or protocol option is then one clear error, with no process started and no run
folder left behind.
"""

from __future__ import annotations

from typing import Any

from splitfed.config import RunConfig
from splitfed.data.datasets import DatasetIndex, load_index
from splitfed.data.partition import parse_scheme
from splitfed.data.shards import client_rows
from splitfed.models import check_cut
from splitfed.protocol import ProtocolSpec


def check_run(config: RunConfig, spec: ProtocolSpec, *, with_data: bool = True) -> None:
    """Raise ConfigError or DataError for what would fail once the run had started."""
    config = config.replace(options=spec.option_values(config.options))  # the protocol's options, checked
    parse_scheme(config.partition)
    index = load_index(config.data) if with_data else None
    if spec.validate is not None:
        spec.validate(config, index)
    elif index is not None:
        check_split_model(config, index)
        check_partition(config, index, config.clients if spec.distributed else 1)


def check_split_model(config: RunConfig, index: DatasetIndex) -> int:
    return check_cut(config.model, config.cut, index.shape, len(index.classes))


def check_partition(config: RunConfig, index: Any, parts: int) -> None:
    """Every part (client or group) gets training and test rows under the run's split."""
    client_rows(index, parts, 0, config.partition, config.test_split, config.test_fraction, config.seed)
