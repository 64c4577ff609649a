"""Label-private SplitFed (``--labels client``): the U-shaped split of SFLv1 and SFLv2.

Each client keeps the model's first ``--cut`` blocks (its front) **and** its last
``--head-blocks`` blocks (its head, default 1: the classifier) with its labels; the server runs
the blocks between. One training batch is two round trips::

    client: acts = front(x)                       --forward {acts}-->      server: out = middle(acts)
    client: logits = head(out), loss, backward    <--middle {acts}--
            (head's gradients, and d loss/d out)  --headgrad {grad}-->     server: out.backward(grad), step
    client: acts.backward(grad), step             <--gradient {grad}--

The server never receives labels, logits or the loss of a batch: the client reports its training
sums (loss, correct, count) once per round with its weights, and its test tally (with the confusion
matrix) with ``eval_done``. What the server does see is the gradient at the head's input, which
leaks labels (``splitfed attack RUN --labels`` measures how much); ``--label-clip``/``--label-noise``
clip and noise it per example on the client (:class:`.defences.GradientDefence`). At round end the
client sends front and head together, and both are averaged like the client half of vanilla SplitFed;
with ``--heads local`` it sends its front only and its head never leaves it, so the server never
holds the whole model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from splitfed.config import PRIVACY_PRESETS, RunConfig
from splitfed.devices import autocast
from splitfed.errors import ConfigError

from .declarations import LABEL_OPTIONS
from .defences import GradientDefence
from .split_steps import infer, loss_with_counts

#: the kinds the U-shaped variant adds: the middle's output, and the gradient at the head's input
LABEL_PRIVATE_MESSAGES = frozenset({"middle", "headgrad"})


#: the options (declared, without torch, in declarations.py)
OPTIONS = LABEL_OPTIONS


def labels_on_client(config: RunConfig) -> bool:
    return config.option("labels", "server") == "client"


def head_blocks(config: RunConfig) -> int:
    return int(config.option("head_blocks", 1))


def gradient_defence(config: RunConfig) -> GradientDefence:
    """The run's defence on the gradient at the head's input (``--label-clip``, ``--label-noise``)."""
    return GradientDefence(clip=float(config.option("label_clip", 0.0)), noise=float(config.option("label_noise", 0.0)))


def heads_local(config: RunConfig) -> bool:
    """``--heads local``: each client's head stays on the client, unaveraged."""
    return config.option("heads", "averaged") == "local"


def validate(config: RunConfig, index: Any) -> None:
    """The split-model and partition checks every SplitFed run gets, and the head's place in the model."""
    from splitfed.checks import check_partition, check_split_model
    from splitfed.models import check_head

    if not labels_on_client(config):
        given = [flag for flag, on in _label_only_flags(config) if on]
        if given:
            raise ConfigError(f"{given[0]} applies with --labels client only; leave it out or add --labels client")
    if gradient_defence(config).noise and not gradient_defence(config).clip:
        raise ConfigError(
            "--label-noise is in units of the clipping bound: give --label-clip too (e.g. --label-clip 0.1)"
        )
    if index is None:
        return
    cut = check_split_model(config, index)
    if labels_on_client(config):
        try:
            check_head(config.model, cut, head_blocks(config), tuple(index.shape), len(index.classes))
        except ConfigError as exc:
            if config.privacy == "none" or PRIVACY_PRESETS[config.privacy].get("cut") != config.cut:
                raise  # no preset, or a cut that is not the preset's
            raise ConfigError(f"{exc} (--privacy {config.privacy} sets --cut {cut} unless you give one)") from None
    check_partition(config, index, config.clients)


def _label_only_flags(config: RunConfig) -> list[tuple[str, bool]]:
    """The flags that mean something with --labels client only, and whether each is set."""
    return [
        ("--head-blocks", head_blocks(config) != 1),
        ("--label-clip", bool(config.option("label_clip", 0.0))),
        ("--label-noise", bool(config.option("label_noise", 0.0))),
        ("--heads", heads_local(config)),
    ]


# --- the server's middle ---


def middle_forward(half: nn.Module, acts: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the activations as a leaf that will collect their gradient, the middle's output), graph kept."""
    acts = acts.detach().requires_grad_(True)
    with autocast(acts.device, precision):
        out = half(acts)
    return acts, out


def middle_backward(
    opt: torch.optim.Optimizer, pending: tuple[torch.Tensor, torch.Tensor], grad: torch.Tensor
) -> torch.Tensor:
    """Finish the middle's backward from the client's gradient at its output, step; the gradient at the cut."""
    acts, out = pending
    opt.zero_grad(set_to_none=True)
    out.backward(grad.to(out.dtype))
    opt.step()
    return acts.grad


@torch.inference_mode()
def middle_eval(half: nn.Module, acts: torch.Tensor, precision: str) -> torch.Tensor:
    """The middle's output for a test batch, in eval mode, without autograd."""
    was_training = half.training
    half.eval()
    with autocast(acts.device, precision):
        out = infer(half, acts)
    half.train(was_training)
    return out


# --- the client's head ---


def head_step(
    head: nn.Module, out: torch.Tensor, labels: torch.Tensor, smoothing: float, precision: str
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float | int]]:
    """Forward the head on the middle's output, loss, backward (the head's gradients accumulate; no
    step yet); returns (the gradient at the head's input, logits, the batch's loss/correct/count sums)."""
    out = out.detach().requires_grad_(True)
    with autocast(out.device, precision):
        logits = head(out)
        loss, counts = loss_with_counts(logits.float(), labels, smoothing)
    loss.backward()
    return out.grad, logits.detach().float(), counts


@torch.inference_mode()
def head_eval(head: nn.Module, out: torch.Tensor, precision: str) -> torch.Tensor:
    """Logits (float32) of a test batch from the middle's output."""
    with autocast(out.device, precision):
        return infer(head, out).float()
