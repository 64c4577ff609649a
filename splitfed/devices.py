"""Device, thread and precision setup shared by the server, the clients and the CLI's checks.

A neutral module, so that the CLI checks a ``--device`` without importing the runtime.
"""

from __future__ import annotations

import contextlib
import os

import torch

from splitfed.errors import ConfigError

#: ``--precision`` values (Lightning's names) and the dtype autocast computes in; 32 = no autocast
PRECISIONS = {"32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int, busy: int) -> int:
    """``threads`` torch threads, or (0) this machine's cores shared among the ``busy`` parties computing at once.

    Returns the number set. Parties that wait for each other (SFLv1's clients wait while the
    server steps) need not split the cores among all processes, only among those busy together.
    """
    n = threads or max(1, cores() // max(1, busy))
    torch.set_num_threads(n)
    return n


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a model's forward (and loss) runs in for ``--precision``: autocast, or nothing at 32.

    Weights, optimizer state, gradients and what goes on the wire stay float32; only the
    compute inside the context runs in bfloat16 or float16.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_precision(device: torch.device, precision: str) -> None:
    """Make ``--precision 32`` mean float32 on CUDA too: cuDNN's convolutions otherwise compute in TF32.

    TF32 keeps 10 bits of mantissa; over a few rounds that moves a run's losses far enough that a
    CUDA run no longer matches the same run on the CPU. A process-wide switch, set the same way by
    every party of a run (and by ``splitfed evaluate`` and ``predict``, which compute in float32); the
    mixed precisions get PyTorch's defaults back.
    """
    if device.type == "cuda":  # set both ways: threads of one process may run one precision, then another
        torch.backends.cudnn.allow_tf32 = precision != "32"  # PyTorch's default, for the mixed precisions
        torch.backends.cuda.matmul.allow_tf32 = False  # PyTorch's default either way


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
