"""Device and thread setup shared by the server, the clients and the CLI's checks.

A neutral module, so that the CLI checks a ``--device`` without importing the runtime.
"""

from __future__ import annotations

import os

import torch

from splitfed.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def set_threads(threads: int, processes: int) -> None:
    """``threads`` torch threads, or (0) this machine's cores shared among ``processes``."""
    n = threads or max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(n)
