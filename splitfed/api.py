"""The Python API: ``splitfed.run(...)`` for scripts and notebooks.

It does what ``splitfed run`` does (the command is a thin layer over :func:`run_config`):
the same checks before anything starts, the same server and client processes talking
over ZeroMQ, the same run folder and the same errors. With ``in_process=True`` every
party runs as a thread of the calling process instead (still encoding and decoding
every message), which starts in a fraction of the time and accepts Python objects
(a model factory defined in a notebook, data as tensors) where processes need import
paths.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitfed.config import RunConfig
from splitfed.errors import ConfigError, SplitFedError
from splitfed.imports import register_object

#: RunConfig fields that name user code: an import path, or (in one process) the object itself
CODE_FIELDS = ("model", "data", "augment")


@dataclass(frozen=True)
class RunResult:
    """What a run left: its folder, ``summary.json`` and the rows of ``metrics.jsonl``."""

    out: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def test_accuracy(self) -> float | None:
        return self.summary.get("test_accuracy")

    @classmethod
    def load(cls, out: Path) -> RunResult:
        out = Path(out)
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        return cls(out, json.loads((out / "summary.json").read_text()), [json.loads(x) for x in lines if x.strip()])


def run(
    protocol: str,
    *,
    clients: int = 2,
    epochs: int | None = None,
    model: str | Callable[..., Any] = "auto",
    data: Any = "digits",
    augment: str | Callable[..., Any] = "auto",
    out: str | Path | None = None,
    resume: str | Path | None = None,
    in_process: bool = False,
    transport: str = "tcp",
    encrypt: bool = False,
    quiet: bool = True,
    **settings: Any,
) -> RunResult:
    """Train ``protocol`` and return its :class:`RunResult`.

    ``settings`` are the other training settings, named as ``splitfed run``'s flags with
    underscores (``lr=3e-4``, ``batch_size=64``, ``cut=2``, ``partition="subject"``,
    ``device="cuda"``), and the protocol's own options (``order="interleaved"`` for sflv2).
    ``model``, ``data`` and ``augment`` take what the flags take (a built-in name, a folder,
    an import path) or, with ``in_process=True``, the Python object itself: a model factory,
    a data function or the rows it would return (a tuple ``(x, y)``, a dict, a Dataset), an
    augmentation function. With processes, a function defined in an importable module is
    passed by its import path. ``resume`` continues a run folder (``epochs`` sets the new total).
    """
    from splitfed import registry

    spec = registry.get(protocol)
    if resume is not None:
        config = RunConfig.from_file(Path(resume) / "config.json")
        if config.protocol != spec.name:
            raise ConfigError(f"{resume} is a {config.protocol} run, not {spec.name}")
        config = config.replace(epochs=epochs) if epochs is not None else config
        folder = Path(resume)
    else:
        code = {"model": model, "data": data, "augment": augment}
        config = make_config(spec, clients=clients, epochs=epochs, settings=settings, code=code, in_process=in_process)
        folder = Path(out) if out is not None else default_out(spec.name)
    run_config(
        config,
        folder,
        resume=resume is not None,
        in_process=in_process,
        transport=transport,
        encrypt=encrypt,
        quiet=quiet,
    )
    return RunResult.load(folder)


def make_config(
    spec: Any,
    *,
    clients: int,
    epochs: int | None,
    settings: dict[str, Any],
    code: dict[str, Any],
    in_process: bool,
) -> RunConfig:
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"protocol", "options", *CODE_FIELDS}
    given = {k: v for k, v in settings.items() if k in fields}
    options = protocol_options(spec, {k: v for k, v in settings.items() if k not in fields})
    values = {**spec.defaults, **given}
    if epochs is not None:
        values["epochs"] = epochs
    for name, value in code.items():
        values[name] = code_reference(name, value, in_process)
    return RunConfig(protocol=spec.name, clients=clients if spec.distributed else 1, options=options, **values)


def protocol_options(spec: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The protocol's own options (its :class:`~splitfed.protocol.Option`s): checked, defaults filled in.

    A name that is neither a setting nor one of the protocol's options is refused, with both lists."""
    known = {o.name for o in spec.options}
    unknown = sorted(set(given) - known)
    if unknown:
        fields = sorted(f.name for f in dataclasses.fields(RunConfig) if f.name not in ("protocol", "options"))
        raise ConfigError(
            f"unknown setting(s) {unknown} for {spec.name}; the settings are {fields}"
            + (f", and {spec.name}'s own {sorted(known)}" if known else "")
        )
    return spec.option_values(given)


def code_reference(name: str, value: Any, in_process: bool) -> str:
    """What the config carries for ``model``/``data``/``augment``: a name, a path or an import path."""
    if isinstance(value, (str, Path)):
        return str(value)
    if in_process:
        if name == "data" and not callable(value):
            rows = value
            value = lambda: rows  # noqa: E731 - the rows themselves: a function that returns them
        return register_object(value)
    if callable(value):
        return import_path_of(name, value)
    raise ConfigError(
        f"{name}= got {type(value).__name__}: with processes, pass a name, a folder or an import path "
        "(package.module:name), or run with in_process=True to hand over Python objects"
    )


def import_path_of(name: str, fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a function other processes can import (a script's own file too)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise ConfigError(f"{name}={fn!r} cannot be found by another process; define it at the top of a module")
    if module == "__main__":
        main = getattr(sys.modules["__main__"], "__file__", None)
        if not main:
            raise ConfigError(
                f"{name}={qualname} was defined in a notebook or an interactive session, which other processes "
                "cannot import: move it into a .py module, or pass in_process=True"
            )
        return f"{Path(main).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def default_out(protocol: str) -> Path:
    return Path("runs") / f"{protocol}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare(config: RunConfig, out: Path, *, resume: bool) -> None:
    """Everything that can fail, checked before any process starts or any file is written."""
    from splitfed import registry
    from splitfed.checks import check_run
    from splitfed.devices import resolve_device
    from splitfed.runtime.membership import check_partial
    from splitfed.runtime.server import load_checkpoint

    spec = registry.get(config.protocol)
    check_partial(config)
    if resume:
        load_checkpoint(out, config, spec)  # nothing to resume, or the wrong protocol: say so now
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"the run folder {out} is not empty: continue that run with --resume {out}, or give a new --out "
            "(or delete the folder)"
        )
    resolve_device(config.device)
    check_run(config, spec)


def run_config(
    config: RunConfig,
    out: Path,
    *,
    resume: bool = False,
    in_process: bool = False,
    transport: str = "tcp",
    encrypt: bool = False,
    quiet: bool = True,
    checked: bool = False,
) -> Path:
    """Check, then run ``config`` into ``out``; return the path of summary.json."""
    if not checked:
        prepare(config, out, resume=resume)
    if in_process:
        if encrypt:
            raise ConfigError("encrypt=True needs processes: in one process no message crosses a network")
        from splitfed.runtime.threads import run_in_threads

        return run_in_threads(config, out, resume=resume, timeout=None, progress=not quiet)
    from splitfed import registry
    from splitfed.runtime.launcher import launch

    distributed = registry.get(config.protocol).distributed
    return launch(
        config, out, transport=transport, quiet=quiet, encrypt=encrypt, resume=resume, distributed=distributed
    )


__all__ = ["RunResult", "SplitFedError", "run", "run_config"]
