"""Data: dataset indexes, train/test splits and client partitions."""

from splitfed.data.datasets import BUILTIN, DatasetIndex, load_index
from splitfed.data.partition import parse_scheme, partition, split_train_test
from splitfed.data.shards import ClientShard, client_shard

__all__ = [
    "BUILTIN",
    "ClientShard",
    "DatasetIndex",
    "client_shard",
    "load_index",
    "parse_scheme",
    "partition",
    "split_train_test",
]
