"""Objects named by an import path: ``package.module:name`` or ``path/to/file.py:name``.

``--model``, ``--data`` and ``--augment`` take such a path for code the user wrote.
Every party resolves it in its own process (on its own machine), so the path has to
mean the same thing wherever a party runs: an installed package, a module beside the
command (the current folder is searched, as ``python -m`` does), or a file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

from splitfed.errors import ConfigError

_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ATTR = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_FILES_LOCK = threading.Lock()

#: objects handed to the Python API in one process (``splitfed.run(model=my_factory)``),
#: under the name ``object:N`` that the config carries instead of an import path
_OBJECTS: dict[str, Any] = {}


def is_import_path(text: str) -> bool:
    """``module:name`` or ``file.py:name`` (a folder or a built-in name is not one)."""
    if text.startswith("object:"):
        return True
    module, sep, attr = text.rpartition(":")
    if not sep or not _ATTR.match(attr) or not module:
        return False
    return module.endswith(".py") or bool(_MODULE.match(module))


def register_object(obj: Any) -> str:
    """A name for ``obj`` that :func:`load_object` resolves in this process only."""
    name = f"object:{id(obj)}"
    _OBJECTS[name] = obj
    return name


def load_object(path: str, flag: str) -> Any:
    """The object ``path`` names; a ConfigError that names ``flag`` and the path says what went wrong."""
    if path.startswith("object:"):
        if path not in _OBJECTS:
            raise ConfigError(
                f"{flag} {path}: an object handed to splitfed.run() exists only in the process that got it; "
                "give an import path (module:name) for runs with several processes"
            )
        return _OBJECTS[path]
    if not is_import_path(path):
        raise ConfigError(f"{flag} {path!r} is not an import path: write package.module:name or path/to/file.py:name")
    module_name, _, attr = path.rpartition(":")
    module = _import_file(module_name, flag, path) if module_name.endswith(".py") else _import(module_name, flag, path)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{flag} {path}: {module_name} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{flag} {path}: {attr} is a {type(obj).__name__}, not a function or class")
    return obj


def _import(module_name: str, flag: str, path: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # a module beside the command, as `python -m` finds it (after installed packages)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{flag} {path}: no module named {exc.name!r} here (searched installed packages and {cwd}); "
                "install it, run from its folder, or give path/to/file.py:name"
            ) from None
        raise ConfigError(f"{flag} {path}: importing {module_name} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(f"{flag} {path}: importing {module_name} failed: {type(exc).__name__}: {exc}") from exc


def _import_file(file: str, flag: str, path: str) -> Any:
    target = Path(file).expanduser().resolve()
    if not target.is_file():
        raise ConfigError(f"{flag} {path}: {file} does not exist (relative paths start at {os.getcwd()})")
    name = f"splitfed_user_{abs(hash(str(target)))}"
    with _FILES_LOCK:  # parties in threads of one process load the file once
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, target)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ConfigError(f"{flag} {path}: running {file} failed: {type(exc).__name__}: {exc}") from exc
        return module
