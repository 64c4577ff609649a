"""Import hygiene: no module of splitfed needs another to be imported first (no import cycle bites),
preprocessing never pulls in the runtime, the CLI imports the runtime only inside its commands,
and plots and the run folder writer do not import each other at module level.

One fresh interpreter walks every module; before each import it forgets every splitfed module,
so each is imported first, as in a process of its own (torch and zmq stay loaded: only the
order of splitfed's own imports matters here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    import splitfed

    def forget():
        for name in [m for m in sys.modules if m == "splitfed" or m.startswith("splitfed.")]:
            del sys.modules[name]

    names = ["splitfed"] + [m.name for m in pkgutil.walk_packages(splitfed.__path__, "splitfed.")]
    names += ["splitfed.protocols", "splitfed.preprocessing"]
    for pkg in ("splitfed.protocols", "splitfed.preprocessing"):
        names += [m.name for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + ".")]
    failed, loaded, skipped = {}, {}, []
    for name in sorted(n for n in set(names) if not n.endswith(".__main__")):  # __main__ runs the CLI
        forget()
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional extra (mediapipe) that is not installed
            if (exc.name or "").startswith("splitfed"):
                failed[name] = repr(exc)
            else:
                skipped.append(name)
            continue
        except Exception as exc:
            failed[name] = repr(exc)
            continue
        loaded[name] = sorted(m for m in sys.modules if m.startswith("splitfed."))
    print(json.dumps({"failed": failed, "loaded": loaded, "skipped": skipped}))
    """
)


def test_every_module_imports_first_and_the_layers_stay_apart() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = report["loaded"]
    assert not report["failed"], report["failed"]
    assert {"splitfed.cli", "splitfed.plots", "splitfed.runtime.outputs", "splitfed.preprocessing.cli"} <= set(loaded)
    for name, modules in loaded.items():
        if name.startswith("splitfed.preprocessing"):
            assert not [m for m in modules if m.startswith(("splitfed.runtime", "splitfed.transport"))], name
    assert not [m for m in loaded["splitfed.cli"] if m.startswith("splitfed.runtime")]
    assert "splitfed.runtime.outputs" not in loaded["splitfed.plots"]
    assert "splitfed.plots" not in loaded["splitfed.runtime.outputs"]
