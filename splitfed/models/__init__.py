"""Models as ordered blocks, and the cut that splits them into a client and a server half.

``--model`` names a built-in (``auto``, ``cnn``, ``cnn-deep``, ``cnn-narrow``, ``mobilenet``,
``mobilenet-narrow``, ``mobilenet-private``, ``resnet10``, ``resnet18``) or a factory of the user's own by
import path (``package.module:factory`` or ``path/to/file.py:factory``, see
:mod:`splitfed.imports`). A factory is called as ``factory(shape, n_classes)`` with the
input shape of one example (e.g. ``(1, 64, 128)`` or ``(30,)``) and returns the model
as ordered blocks: an ``nn.Sequential``, a list of modules, or a list of
``(name, module)`` pairs. ``--cut N`` gives the client the first N blocks; without
``--cut`` the client keeps ``factory.default_cut`` blocks if the factory sets it, else 1.

``auto``, the default, is the compact ``cnn`` for images under :data:`AUTO_MIN_SIDE` pixels
on their short side (the 8x8 digits) and :data:`AUTO_LARGE` from there up (eye crops): the
choice the model comparison in ``benchmarks/proxy_quality.py --models`` supports (README,
"Choosing the default model").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from splitfed.errors import ConfigError
from splitfed.imports import is_import_path, load_object
from splitfed.models.cnn import compact_cnn, deep_cnn, narrow_cnn
from splitfed.models.init import seeded
from splitfed.models.mobilenet import mobilenet_blocks, mobilenet_narrow, mobilenet_private
from splitfed.models.resnet import resnet18_blocks
from splitfed.models.small_resnet import small_resnet_blocks

Builder = Callable[[tuple[int, ...], int], list[tuple[str, nn.Module]]]

#: name -> (builder, default cut: the number of blocks on the client side)
MODELS: dict[str, tuple[Builder, int]] = {
    "cnn": (compact_cnn, 1),
    "cnn-deep": (deep_cnn, 1),
    "cnn-narrow": (narrow_cnn, 3),
    "mobilenet": (mobilenet_blocks, 1),
    "mobilenet-narrow": (mobilenet_narrow, 4),
    "mobilenet-private": (mobilenet_private, 5),
    "resnet10": (small_resnet_blocks, 1),
    "resnet18": (resnet18_blocks, 2),
}

DEFAULT_MODEL = "auto"
#: ``--model auto`` builds AUTO_SMALL below AUTO_MIN_SIDE pixels on the short side, AUTO_LARGE from it up
AUTO_SMALL, AUTO_LARGE, AUTO_MIN_SIDE = "cnn", "mobilenet", 32

#: a user's factory draws its initial weights from torch's global RNG; parties in threads of
#: one process take turns, and the global state is restored afterwards
_GLOBAL_RNG = threading.Lock()


def architecture(name: str, shape: tuple[int, ...]) -> str:
    """What ``--model name`` builds for examples of ``shape``: ``auto`` resolved by the image size."""
    if name != DEFAULT_MODEL:
        return name
    return AUTO_LARGE if len(shape) == 3 and min(shape[1:]) >= AUTO_MIN_SIDE else AUTO_SMALL


def check_model_name(name: str) -> None:
    if name != DEFAULT_MODEL and name not in MODELS and not is_import_path(name):
        raise ConfigError(
            f"--model {name!r} is neither a built-in model ({', '.join([DEFAULT_MODEL, *sorted(MODELS)])}) "
            "nor an import path (package.module:factory or path/to/file.py:factory)"
        )


def build_model(name: str, shape: tuple[int, ...], n_classes: int, seed: int) -> nn.Sequential:
    """The whole (unsplit) model, initialised from ``seed`` alone (see :mod:`splitfed.models.init`)."""
    check_model_name(name)
    name = architecture(name, shape)
    if name in MODELS:
        builder = MODELS[name][0]
        conv_init = "kaiming_fan_out" if name.startswith("resnet") else "torch"
        return seeded(
            lambda: nn.Sequential(OrderedDict(_built_in(name, builder, shape, n_classes))), seed, conv_init=conv_init
        )
    factory = load_object(name, "--model")
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _as_blocks(name, _call_factory(name, factory, shape, n_classes))


def _built_in(name: str, builder: Builder, shape: tuple[int, ...], n_classes: int) -> list[tuple[str, nn.Module]]:
    if len(shape) != 3:
        raise ConfigError(
            f"--model {name} takes images (channels, height, width), but the data's examples have shape "
            f"{tuple(shape)}; give a model of your own for this data (--model package.module:factory)"
        )
    return builder(shape, n_classes)


def _call_factory(name: str, factory: Any, shape: tuple[int, ...], n_classes: int) -> Any:
    try:
        return factory(tuple(shape), n_classes)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"--model {name} failed when called as factory(shape={tuple(shape)}, n_classes={n_classes}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _as_blocks(name: str, built: Any) -> nn.Sequential:
    """What a factory returned, as an ``nn.Sequential`` of named blocks."""
    if isinstance(built, nn.Sequential):
        blocks = list(built._modules.items())
    elif isinstance(built, (list, tuple)) and all(isinstance(b, nn.Module) for b in built):
        blocks = [(f"block{i}", b) for i, b in enumerate(built)]
    elif isinstance(built, (list, tuple)) and all(
        isinstance(b, tuple) and len(b) == 2 and isinstance(b[0], str) and isinstance(b[1], nn.Module) for b in built
    ):
        blocks = list(built)
    else:
        raise ConfigError(
            f"--model {name} returned {type(built).__name__}; a model factory returns its blocks in order: "
            "an nn.Sequential, a list of modules, or a list of (name, module) pairs"
        )
    if len(blocks) < 2:
        raise ConfigError(
            f"--model {name} returned {len(blocks)} block(s); a split model needs at least 2 "
            "(the client keeps the first --cut blocks, the server the rest)"
        )
    return nn.Sequential(OrderedDict(blocks))


def default_cut(name: str) -> int:
    if name == DEFAULT_MODEL:  # both of auto's choices keep one block on the client
        return MODELS[AUTO_SMALL][1]
    if name in MODELS:
        return MODELS[name][1]
    cut = getattr(load_object(name, "--model"), "default_cut", 1)
    if not isinstance(cut, int):
        raise ConfigError(f"--model {name}: default_cut must be a whole number, not {cut!r}")
    return cut


def resolve_cut(name: str, cut: int | None, model: nn.Sequential) -> int:
    cut = default_cut(name) if cut is None else cut
    if not 1 <= cut < len(model):
        names = list(model._modules)
        raise ConfigError(
            f"--cut {cut} is out of range for {name}: use 1..{len(model) - 1} "
            f"(the number of blocks the client keeps, out of {names})"
        )
    return cut


def check_cut(name: str, cut: int | None, shape: tuple[int, ...], n_classes: int) -> int:
    """The cut a run will use, checked before any process starts. A built-in model is built on
    ``meta`` (no memory, no weights); a factory of the user's is built and run on one example,
    so that a model that cannot take the data fails here, with the factory's name."""
    check_model_name(name)
    name = architecture(name, shape)
    if name in MODELS:
        with torch.device("meta"):
            model = nn.Sequential(OrderedDict(_built_in(name, MODELS[name][0], shape, n_classes)))
        return resolve_cut(name, cut, model)
    model = build_model(name, shape, n_classes, seed=0)
    chosen = resolve_cut(name, cut, model)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except Exception as exc:
        raise ConfigError(
            f"--model {name} cannot take examples of shape {tuple(shape)}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, n_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"--model {name} returned outputs of shape {got} for 2 examples; expected (2, {n_classes})")
    return chosen


def split_model(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Client half = the first ``cut`` blocks; server half = the rest. They share the weights."""
    blocks = list(model._modules.items())
    return nn.Sequential(OrderedDict(blocks[:cut])), nn.Sequential(OrderedDict(blocks[cut:]))


def split_three(model: nn.Sequential, cut: int, head: int) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential]:
    """The U-shaped split (``--labels client``): the client's front (the first ``cut`` blocks), the
    server's middle, and the client's head (the last ``head`` blocks). They share the weights."""
    blocks = list(model._modules.items())
    parts = blocks[:cut], blocks[cut : len(blocks) - head], blocks[len(blocks) - head :]
    return tuple(nn.Sequential(OrderedDict(p)) for p in parts)  # type: ignore[return-value]


def check_head(name: str, cut: int, head: int, shape: tuple[int, ...], n_classes: int) -> None:
    """``--head-blocks`` leaves the server at least one block between the client's front and head, and
    weights in those blocks (an optimizer over none fails, and it would fail only once training began)."""
    name = architecture(name, shape)
    if name in MODELS:
        with torch.device("meta"):
            pairs = list(_built_in(name, MODELS[name][0], shape, n_classes))
    else:
        pairs = list(build_model(name, shape, n_classes, seed=0)._modules.items())
    blocks = [b for b, _ in pairs]

    def weighted(c: int) -> bool:  # the server's middle at cut c has weights
        return any(True for _, block in pairs[c : len(pairs) - head] for _ in block.parameters())

    def advice() -> str:  # for the errors only
        deepest = max((c for c in range(1, len(pairs) - head) if weighted(c)), default=None)
        if deepest:
            return f"the deepest cut that leaves the server a block with weights is {deepest}"
        return f"no cut leaves the server a block with weights with --head-blocks {head}"

    if head < 1 or cut + head >= len(blocks):
        raise ConfigError(
            f"--head-blocks {head} with --cut {cut} leaves the server no block of {name} ({blocks}): "
            f"with --labels client the client keeps the first --cut blocks and the last --head-blocks, "
            f"so cut + head-blocks must be at most {len(blocks) - 1}; {advice()}"
        )
    if not weighted(cut):
        middle = [b for b, _ in pairs[cut : len(pairs) - head]]
        raise ConfigError(
            f"--cut {cut} with --head-blocks {head} leaves the server only {middle} of {name}, which has no "
            f"weights to train: {advice()}"
        )


__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "architecture",
    "build_model",
    "check_cut",
    "check_head",
    "check_model_name",
    "default_cut",
    "resolve_cut",
    "split_model",
    "split_three",
]
