"""What the zygote loads besides its preload list: every protocol's roles, and what each party would read on its own.

The entry points name light declarations (protocols/declarations.py), so importing them does
not import the protocols' maths: :func:`warm` loads every registered protocol's whole spec
(:func:`splitfed.registry.get`), which also reads the installed entry points once for every
party forked after it (each read scans all installed packages' metadata). A protocol whose
roles cannot be loaded is left to the checks, which report it as one ``error:`` line.
"""

from __future__ import annotations

#: imported on first use by every client (``numpy.unique`` imports ``numpy.ma``): read once, in the zygote
MODULES = ("numpy.ma",)


def warm() -> None:
    """Load every protocol's spec and :data:`MODULES`."""
    import importlib

    from splitfed import registry
    from splitfed.errors import ConfigError

    for name in registry.available():
        try:
            registry.get(name)
        except ConfigError:  # not a ProtocolSpec, say: the checks say so, once
            pass
    for module in MODULES:
        importlib.import_module(module)
