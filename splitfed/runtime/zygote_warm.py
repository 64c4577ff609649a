"""The zygote's last preload: every registered protocol, and what each party would otherwise read on its own.

It loads every registered protocol's whole spec (:func:`splitfed.registry.get`): the module
its entry point names (for the built-in ones a light declaration) and the roles that names,
and so reads the installed entry points once for every party forked after it (each read
scans all installed packages' metadata). A protocol that raises at import ends the zygote
with its traceback, as any preload does (an ImportError, or a spec that is not one, is left
to the checks, which report it as one ``error:`` line).

Importing this module anywhere but in the forkserver's preloading does nothing.
"""

from __future__ import annotations

from splitfed.runtime.zygote_signals import preloaded_by_forkserver

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
        except (ConfigError, ImportError):  # the checks say so, once
            pass
    for module in MODULES:
        importlib.import_module(module)
    from splitfed.timeline import mark

    mark("preloaded")


if preloaded_by_forkserver():
    warm()
