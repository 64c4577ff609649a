"""Keep ``torch._dynamo`` out of processes that never compile.

A torch optimizer imports ``torch._dynamo`` twice over, whether or not anything is ever
compiled: its constructor calls functions that torch wraps with ``torch._disable_dynamo``
(``add_param_group``, and later ``zero_grad``, ``state_dict``, ...), whose wrapper imports
``torch._dynamo`` on its first call to build the "disabled" function, and its ``step`` is
wrapped by ``_use_grad_for_differentiable``, which imports ``torch._dynamo`` on every call to
put a graph break around the update. That import is the largest single step of a party's
start-up (about 1.1 s of CPU here, after 1.4 s for ``import torch``; ``benchmarks/startup.py``).

Nothing can be compiling while ``torch._dynamo`` has not been imported, so until it is, a
disabled function is the function itself and a graph break does nothing. This module relies on
that, and on nothing else:

- :func:`defer` gives each ``torch._disable_dynamo`` wrapper in ``torch.optim`` a stand-in, in
  the attribute where the wrapper caches its disabled function (``torch/_compile.py``): it calls
  the function directly while ``torch._dynamo`` is absent, and builds, keeps and calls the real
  disabled function once something else (a ``torch.compile``, a library) has imported it.
- :func:`eager` subclasses a torch optimizer (``Adam`` becomes ``EagerAdam``, kept in this module
  so that pickle finds it) with a ``step`` that does what
  ``_use_grad_for_differentiable`` does (gradients on only for a differentiable optimizer) but
  the graph break, while ``torch._dynamo`` is absent, and is torch's own ``step`` once it is
  there. The subclass is the torch class for everything else (``isinstance``, state dicts,
  hooks, schedulers).

Both read how this torch builds those wrappers (by their code objects, not their names); where
another torch builds them differently, they change nothing and the import happens as before:
slower, never wrong. Tests check that the optimizers step exactly as torch's and that a party
never imports ``torch._dynamo``.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

#: the attribute in which a ``torch._disable_dynamo`` wrapper caches the disabled function, on the function
_CACHE = "__dynamo_disable"
#: the modules (and their submodules) whose wrappers a training process reaches: optimizers, schedules
_MODULES = ("torch.optim", "torch.optim.lr_scheduler")

#: what this module expects of torch's wrappers (``co_freevars``, ``co_names`` of their code), as torch
#: 2.14 builds them: a torch whose wrappers do anything else is left alone
_DISABLE = (("fn", "recursive"), ("getattr", "torch._dynamo", "_dynamo", "disable", "__dynamo_disable"))
_USE_GRAD = (
    ("func",),
    ("torch._dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled", "defaults", "_dynamo", "graph_break"),
)

_lock = threading.RLock()
_deferred = False
_classes: dict[type, type] = {}


def _loaded() -> Any:
    """``torch._dynamo`` once it is imported (and far enough to use), else None."""
    return getattr(sys.modules.get("torch._dynamo"), "disable", None) and sys.modules["torch._dynamo"]


def _stand_in(fn: Callable[..., Any], recursive: bool) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        dynamo = _loaded()
        if dynamo is None:
            return fn(*args, **kwargs)
        real = dynamo.disable(fn, recursive, wrapping=False)  # what the wrapper would have built
        setattr(fn, _CACHE, real)
        return real(*args, **kwargs)

    return call


def _cells(function: Any) -> dict[str, Any] | None:
    code, cells = getattr(function, "__code__", None), getattr(function, "__closure__", None)
    if code is None or cells is None:
        return None
    try:
        return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells, strict=True)}
    except (ValueError, TypeError):  # an empty cell, or another layout
        return None


def _give_stand_in(wrapper: Any, code: Any) -> bool:
    if getattr(wrapper, "__code__", None) is not code:  # not a wrapper that torch._disable_dynamo made
        return False
    cells = _cells(wrapper)
    if cells is None or not callable(cells.get("fn")) or not isinstance(cells.get("recursive"), bool):
        return False
    fn = cells["fn"]
    if getattr(fn, _CACHE, None) is not None:  # called already, or reached through another name
        return False
    setattr(fn, _CACHE, _stand_in(fn, cells["recursive"]))
    return True


def defer() -> int:
    """Give the ``torch._disable_dynamo`` wrappers in :data:`_MODULES` their stand-ins, once per process.

    Returns how many functions it covered: 0 on a second call, or where this torch builds its
    wrappers differently (then nothing changed)."""
    global _deferred
    with _lock:
        if _deferred:
            return 0
        _deferred = True
        import torch

        for name in _MODULES:
            importlib.import_module(name)
        make = getattr(torch, "_disable_dynamo", None)
        code = getattr(make(lambda: None), "__code__", None) if callable(make) else None
        if code is None or (code.co_freevars, code.co_names) != _DISABLE:
            return 0
        covered = 0
        for name, module in list(sys.modules.items()):
            if module is None or not any(name == m or name.startswith(m + ".") for m in _MODULES):
                continue
            for value in list(vars(module).values()):
                members = list(vars(value).values()) if isinstance(value, type) else [value]
                for member in members:
                    covered += _give_stand_in(getattr(member, "__func__", member), code)  # static/class methods too
        return covered


def _steps(cls: type) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """``cls.step``'s ``_use_grad_for_differentiable`` wrapper and the function under it (below any
    profiling hook torch has put above them), or None where ``step`` is not wrapped as expected."""
    from torch.optim import optimizer

    wrap = getattr(optimizer, "_use_grad_for_differentiable", None)
    code = getattr(wrap(lambda self: None), "__code__", None) if callable(wrap) else None
    if code is None or (code.co_freevars, code.co_names) != _USE_GRAD:
        return None
    step = getattr(cls, "step", None)
    while step is not None:
        if getattr(step, "__code__", None) is code:
            plain = getattr(step, "__wrapped__", None)
            return (step, plain) if callable(plain) else None
        step = getattr(step, "__wrapped__", None)
    return None


def _build(cls: type) -> type:
    steps = _steps(cls)
    if steps is None:
        return cls
    wrapped, plain = steps
    import torch

    def step(self: Any, closure: Callable[[], Any] | None = None) -> Any:
        if _loaded() is not None:  # something may be compiling: torch's own step, graph break and all
            return wrapped(self, closure)
        enabled = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            return plain(self, closure)
        finally:
            torch.set_grad_enabled(enabled)

    step.__doc__ = plain.__doc__
    hook = getattr(cls, "profile_hook_step", None)
    if callable(hook):  # what torch's constructor does to a class's step on first use, done once here
        step = hook(step)
        step.hooked = True
    name = f"Eager{cls.__name__}"
    return type(name, (cls,), {"step": step, "__module__": __name__, "__qualname__": name})


def eager(cls: type) -> type:
    """``cls`` (one of ``torch.optim``'s optimizers) with a ``step`` that imports no ``torch._dynamo``,
    named ``Eager`` + its name (as ``repr`` and the profiler show it); ``cls`` itself where its ``step``
    is not wrapped as this module expects. One class per ``cls``, safe to call from several threads."""
    with _lock:
        built = _classes.get(cls)
        if built is None:
            built = _classes[cls] = _build(cls)
        return built


def __getattr__(name: str) -> type:
    """``splitfed.lazy_dynamo.EagerAdam`` and the like, built on first use: how pickle finds them."""
    import torch.optim

    base = getattr(torch.optim, name[len("Eager") :], None) if name.startswith("Eager") else None
    if isinstance(base, type) and issubclass(base, torch.optim.Optimizer):
        built = eager(base)
        if built is not base:
            return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
