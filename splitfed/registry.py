"""Find protocols through the ``splitfed.protocols`` entry-point group.

The core never imports the protocols package: protocols register themselves in
pyproject.toml (as a third party's package could), and the registry loads them by
name on demand.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from splitfed.errors import ConfigError

if TYPE_CHECKING:
    from splitfed.protocol import ProtocolSpec

GROUP = "splitfed.protocols"


def available() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def get(name: str) -> ProtocolSpec:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        names = available()
        if not names:
            raise ConfigError("no protocols are registered: install splitfed first (bash scripts/setup.sh)")
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(names)}")
    from splitfed.protocol import ProtocolSpec

    spec = found[0].load()
    if not isinstance(spec, ProtocolSpec):
        raise ConfigError(f"entry point {found[0].value} is not a ProtocolSpec")
    return spec
