"""What produced a run: the versions recorded in its config.json and summary.json.

Standard library only (``importlib.metadata`` reads torch's version without importing it),
so the launcher can record them too.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path | None = None) -> str | None:
    """The commit splitfed's source is checked out at (``+dirty`` with uncommitted changes), or None outside git."""
    folder = folder or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """``splitfed``, ``torch``, ``python`` versions and splitfed's ``git_commit`` (None where unknown)."""
    from splitfed import __version__

    return {
        "splitfed": __version__,
        "torch": _installed("torch"),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }
