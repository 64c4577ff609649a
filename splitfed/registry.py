"""Find protocols through the ``splitfed.protocols`` entry-point group.

The core never imports the protocols package: protocols register themselves in
pyproject.toml (as a third party's package could), and the registry loads them by
name on demand. An entry point names either a :class:`~splitfed.protocol.ProtocolSpec` or a
light :class:`~splitfed.declaration.Declaration` of one: :func:`declared` is what listing and
``--help`` need (no torch for a declaration), :func:`get` the whole spec a run needs.

The installed entry points are read once per process (each read scans every installed
package's metadata: about 10 ms); a zygote reads them before it forks, for its children.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from splitfed.errors import ConfigError

if TYPE_CHECKING:
    from splitfed.declaration import Declaration
    from splitfed.protocol import ProtocolSpec

GROUP = "splitfed.protocols"


@functools.cache
def _entry_points() -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=GROUP))


def available() -> list[str]:
    return sorted({ep.name for ep in _entry_points()})


def declared(name: str) -> Declaration | ProtocolSpec:
    """What ``--help`` and ``splitfed protocols`` show of protocol ``name``: its declaration, where it
    registered one (no torch), else its spec."""
    found = [ep for ep in _entry_points() if ep.name == name]
    if not found:
        names = available()
        if not names:
            raise ConfigError("no protocols are registered: install splitfed first (bash scripts/setup.sh)")
        raise ConfigError(f"unknown protocol {name!r}; available: {', '.join(names)}")
    from splitfed.declaration import Declaration
    from splitfed.protocol import ProtocolSpec

    spec = found[0].load()
    if not isinstance(spec, (ProtocolSpec, Declaration)):
        raise ConfigError(f"entry point {found[0].value} is not a ProtocolSpec")
    return spec


def get(name: str) -> ProtocolSpec:
    """The whole spec of protocol ``name``, roles and all (imports its maths)."""
    from splitfed.declaration import Declaration

    spec = declared(name)
    return spec.load() if isinstance(spec, Declaration) else spec
