"""Defences a client applies to its cut activations before they leave it.

* ``--dp-clip C``: each example's activations are scaled down to an L2 norm of at most C
  (per-example clipping; the scaling is part of the client's graph, so backward goes through it).
* ``--dp-noise SIGMA``: Gaussian noise of standard deviation ``SIGMA * C`` is added to every
  element of every example, in training and in evaluation alike: whatever the server sees is noised.
  This is the Gaussian mechanism's shape, but there is no privacy accounting here: it is a defence
  whose effect is *measured* (``benchmarks/privacy_table.py``), not a formal (epsilon, delta) guarantee.
* ``--nopeek W``: NoPeek (Vepakomma et al., 2020): ``W * dCor(x, acts)``, the sample distance
  correlation between each batch's inputs and its activations, is added to the client's loss, so
  training makes the activations less informative about the raw inputs.

With ``--labels client`` a client can also defend the gradient it returns at its head's input, which
carries the labels (:class:`GradientDefence`, ``--label-clip`` / ``--label-noise``).

Noise draws come from a private generator per batch (seed, client, round, epoch, step), so runs
are reproducible and parties in threads of one process never share a random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from splitfed.config import RunConfig

#: the ``epoch`` of evaluation batches' noise streams (training epochs count from 0)
EVAL_STREAM = 0xE7A1


@dataclass(frozen=True)
class Defence:
    """The client-side defences of a run (all off by default)."""

    clip: float = 0.0
    noise: float = 0.0
    nopeek: float = 0.0

    @classmethod
    def of(cls, config: RunConfig) -> Defence:
        return cls(clip=config.dp_clip, noise=config.dp_noise, nopeek=config.nopeek)

    @property
    def active(self) -> bool:
        return bool(self.clip or self.noise or self.nopeek)

    def release(self, acts: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """What leaves the client: ``acts`` clipped per example and noised (differentiable in ``acts``), in
        float32 whenever it clips or noises, so the bound and the noise hold under --precision bf16-mixed too."""
        out = acts.float() if (self.clip or self.noise) else acts
        if self.clip:
            norms = out.reshape(len(out), -1).norm(dim=1).clamp_min(1e-12)
            factor = (self.clip / norms).clamp(max=1.0)
            out = out * factor.reshape(-1, *([1] * (out.dim() - 1)))
        if self.noise:
            draw = torch.randn(out.shape, generator=generator, dtype=torch.float32)
            out = out + (self.noise * self.clip) * draw.to(device=out.device, dtype=out.dtype)
        return out

    def penalty(self, x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor | None:
        """NoPeek's term for this batch, or None when it is off."""
        if not self.nopeek or len(x) < 2:
            return None
        return self.nopeek * distance_correlation(x, acts)


#: the salts of a batch's two private streams: noise on the activations, noise on the returned gradient
ACTS_STREAM, GRAD_STREAM = 0xD9, 0x6AD


def noise_generator(
    seed: int, client: int, round: int, epoch: int, step: int, salt: int = ACTS_STREAM
) -> torch.Generator:
    """The private noise stream of one batch (evaluation passes ``epoch=EVAL_STREAM``; the returned
    gradient's noise ``salt=GRAD_STREAM``, so it is drawn independently of the activations')."""
    state = np.random.SeedSequence([seed, client, round, epoch, step, salt]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


@dataclass(frozen=True)
class GradientDefence:
    """``--label-clip C`` / ``--label-noise SIGMA`` (``--labels client``; both off by default): what a
    client does to the gradient at its head's input before it leaves. That gradient is, example by
    example, the head's weights applied to (softmax - one-hot label), so its direction names the label
    (:mod:`splitfed.label_attack`). As in DP-SGD, each example's own gradient (of its own loss: the
    sent row times the batch size) is clipped to an L2 norm of at most C, and Gaussian noise of std
    SIGMA * C is added to each of its elements; the batch's mean is what is sent. Per example the noise
    hides the direction; over a batch the middle's weight gradient averages it down, so training goes on.
    Isotropic noise on the cut gradient is the baseline defence of Li et al. (2022, "Label leakage and
    protection in two-party split learning"); it carries no (epsilon, delta) accounting here."""

    clip: float = 0.0
    noise: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.clip or self.noise)

    def release(self, grad: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The rows of ``grad`` (the gradient of the batch's mean loss, one row per example) as sent: in
        float32, clipped and noised per example when the defence is on, else ``grad`` itself."""
        if not self.active:
            return grad
        n = len(grad)
        own = grad.float() * n  # each example's gradient of its own loss
        norms = own.reshape(n, -1).norm(dim=1).clamp_min(1e-12)
        own = own * (self.clip / norms).clamp(max=1.0).reshape(-1, *([1] * (own.dim() - 1)))
        if self.noise:
            draw = torch.randn(own.shape, generator=generator, dtype=torch.float32)
            own = own + (self.noise * self.clip) * draw.to(own.device)
        return own / n


def _centred_distances(z: torch.Tensor) -> torch.Tensor:
    flat = z.reshape(len(z), -1).float()
    d = torch.cdist(flat, flat)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation (Szekely et al.) between the rows of ``x`` and of ``z``: 0 when
    independent, 1 when one is a similarity transform of the other. Differentiable in ``z``."""
    a, b = _centred_distances(x.detach().to(z.device)), _centred_distances(z)
    dcov_xy = (a * b).mean().clamp_min(0)
    dcov_xx, dcov_zz = (a * a).mean(), (b * b).mean()
    return torch.sqrt(dcov_xy / torch.sqrt(dcov_xx * dcov_zz).clamp_min(1e-12) + 1e-12)


def client_backward(sent: torch.Tensor, grad: torch.Tensor, penalty: torch.Tensor | None) -> None:
    """Backward of the client half: the server's gradient at the cut, plus NoPeek's term if any."""
    if penalty is None:
        sent.backward(grad)
    else:
        torch.autograd.backward([sent, penalty], [grad, torch.ones_like(penalty)])
