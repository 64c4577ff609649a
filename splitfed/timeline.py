"""Start-up marks for ``benchmarks/startup.py``: where the seconds before round 1 go.

With ``SPLITFED_TIMELINE=FOLDER`` set, every process of a run (the command, the server,
each client) appends ``{"party", "event", "t"}`` lines (``t``: wall-clock seconds) to its
own file in FOLDER. Unset, :func:`mark` does nothing and costs one dictionary lookup.
Standard library only: the command marks its start before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
import time

ENV = "SPLITFED_TIMELINE"
_party = "command"


def set_party(name: str) -> None:
    """Name the marks this process makes from now on (``server``, ``client-0``)."""
    global _party
    _party = name


def party_from_argv(argv: list[str]) -> str:
    """The party a ``splitfed`` command line starts: ``server``, the client's ``--name``, else ``command``."""
    if argv[:1] == ["server"]:
        return "server"
    if argv[:1] == ["client"]:
        return argv[argv.index("--name") + 1] if "--name" in argv[:-1] else "client"
    return "command"


def mark(event: str, at: float | None = None, extra: dict | None = None) -> None:
    """Record that ``event`` happened now (or at ``at``), with ``extra`` fields, if a timeline was asked for."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    t = time.time() if at is None else at
    line = json.dumps({"party": _party, "event": event, "t": t, "pid": os.getpid(), **(extra or {})})
    with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def read_marks(folder: str | os.PathLike) -> list[dict]:
    """Every mark recorded under ``folder`` (what :func:`mark` wrote, one file per process), in no set order."""
    from pathlib import Path

    return [json.loads(line) for path in Path(folder).glob("*.jsonl") for line in path.read_text().splitlines()]
