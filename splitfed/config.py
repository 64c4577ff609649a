"""The run configuration: one frozen dataclass, validated once at the edge."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from splitfed.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "step")
WIRE_DTYPES = ("float32", "float16", "bfloat16")
PRECISION_NAMES = ("32", "bf16-mixed", "16-mixed")  # --precision, Lightning's names
DEVICES = ("cpu", "cuda")
#: ``--privacy PRESET``: the settings it gives to those of its fields left at their defaults (``model``,
#: ``cut`` and ``lr`` included). ``strong``: ``mobilenet-private`` cut after its pool, so 256 numbers per
#: example leave the client, each example's scaled to norm 1 and noised (README, "Privacy you can measure":
#: noise 0.15 held the decoder and the posterior mean under SSIM 0.5 on upscaled digits; the learning rate
#: 2e-3 makes up for most of what the noise slows on the learning-quality proxy)
PRIVACY_PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "strong": {"model": "mobilenet-private", "cut": 5, "lr": 2e-3, "dp_clip": 1.0, "dp_noise": 0.15},
}
#: a preset's setting that only means something beside another: given only while that other one is at
#: its default or was set by the preset too (the preset's cut with its model; its lr, tuned with adam)
PRESET_NEEDS: dict[str, str] = {"cut": "model", "lr": "optimizer"}


def preset_settings(privacy: str, left_out: Callable[[str], bool]) -> dict[str, Any]:
    """What ``--privacy privacy`` gives: each of its settings that ``left_out`` says was left out, where the
    setting it needs (:data:`PRESET_NEEDS`) was left out too."""
    if privacy not in PRIVACY_PRESETS:
        raise ConfigError(f"--privacy {privacy!r} is not one of {tuple(PRIVACY_PRESETS)}")
    return {
        name: value
        for name, value in PRIVACY_PRESETS[privacy].items()
        if left_out(name) and (name not in PRESET_NEEDS or left_out(PRESET_NEEDS[name]))
    }


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. The server sends the training part to every client."""

    protocol: str
    clients: int = 2
    epochs: int = 20
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float | None = None  # None: 0.01 for adamw (its usual decoupled decay), 0 for adam and sgd
    schedule: str = "none"  # learning rate by round: none, cosine or step
    warmup: int = 0  # rounds of linear warmup before the schedule
    label_smoothing: float = 0.0
    clip_grad: float = 0.0  # largest gradient norm per optimizer step; 0 = no clipping
    val_fraction: float = 0.0  # share of each client's training rows held out for validation
    early_stop: int = 0  # stop after this many rounds without a better validation accuracy; 0 = never
    model: str = "auto"
    cut: int | None = None
    seed: int = 0
    wire_dtype: str = "float32"
    wire_compress: str = "none"  # lossy codec of activations and gradients: none, int8[:stochastic], topk:F
    # client-side defences of the activations that leave a client (SplitFed protocols)
    dp_clip: float = 0.0  # per-example L2 bound of the activations; 0 = no clipping
    dp_noise: float = 0.0  # Gaussian noise std, in units of dp_clip; 0 = no noise
    nopeek: float = 0.0  # weight of NoPeek's distance-correlation penalty; 0 = off
    privacy: str = "none"  # a preset of the settings above, model, cut and lr included (PRIVACY_PRESETS)
    precision: str = "32"  # compute precision of the model steps: 32, bf16-mixed or 16-mixed (autocast)
    augment: str = "auto"  # training batches, on the clients: auto, none, standard, standard-noflip or an import path
    # data (each client process applies these to load only its own rows)
    data: str = "digits"
    partition: str = "iid"
    test_split: str = "random"
    test_fraction: float = 0.2
    # runtime
    device: str = "cpu"
    timeout: float = 60.0
    join_timeout: float = 600.0  # how long the server waits for clients to join and load their data
    max_message_mb: int = 512
    checkpoint_every: int = 1
    # membership: how many clients train each round, how many the run needs, how long it waits for them
    clients_per_round: float = 0  # 0 = every client; a whole number K >= 1; or a fraction in (0, 1) of --clients
    min_clients: int = 0  # 0 = a lost client ends the run; M >= 1: a lost client is dropped; rounds start with M
    rejoin_timeout: float = 300.0  # with --min-clients: seconds to wait for members when fewer than M are left
    threads: int = 0  # torch threads per process; 0 = cores / processes
    tensorboard: bool = False  # the server also writes each round's scalars as a TensorBoard event file
    # protocol-specific options (e.g. sflv2's order), validated by the protocol
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = {
            "clients": self.clients,
            "epochs": self.epochs,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "max_message_mb": self.max_message_mb,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.weight_decay is None:
            object.__setattr__(self, "weight_decay", 0.01 if self.optimizer == "adamw" else 0.0)
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {self.schedule!r} is not one of {SCHEDULES}")
        if not isinstance(self.warmup, int) or not 0 <= self.warmup < max(self.epochs, 1) + 1:
            raise ConfigError(f"--warmup must be a whole number of rounds from 0 to --epochs, got {self.warmup!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise ConfigError(f"--early-stop must be a whole number of rounds >= 0, got {self.early_stop!r}")
        if self.early_stop and not self.val_fraction:
            raise ConfigError("--early-stop watches the validation accuracy: give --val-fraction too (e.g. 0.1)")
        if self.clip_grad < 0:
            raise ConfigError(f"--clip-grad must be >= 0 (0 = off), got {self.clip_grad}")
        self._check_privacy()
        if self.wire_dtype not in WIRE_DTYPES:
            raise ConfigError(f"--wire-dtype {self.wire_dtype!r} is not one of {WIRE_DTYPES}")
        if self.precision not in PRECISION_NAMES:
            raise ConfigError(f"--precision {self.precision!r} is not one of {', '.join(PRECISION_NAMES)}")
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"--device {self.device!r} is not one of cpu, cuda, cuda:N")
        if not self.timeout > 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout}")
        if not self.join_timeout > 0:
            raise ConfigError(f"--join-timeout must be positive, got {self.join_timeout}")
        if self.cut is not None and self.cut < 1:
            raise ConfigError(f"--cut must be >= 1, got {self.cut}")
        if self.checkpoint_every < 0:
            raise ConfigError("--checkpoint-every must be >= 0 (0 turns checkpoints off)")
        self._check_membership()

    def _check_membership(self) -> None:
        k = self.clients_per_round
        if not (k == 0 or 0 < k < 1 or (float(k).is_integer() and 1 <= k <= self.clients)):
            raise ConfigError(
                f"--clients-per-round must be 0 (every client), a whole number from 1 to --clients ({self.clients}) "
                f"or a fraction between 0 and 1, got {k!r}"
            )
        if not isinstance(self.min_clients, int) or not 0 <= self.min_clients <= self.per_round:
            raise ConfigError(
                f"--min-clients must be a whole number from 0 (off) to the clients per round ({self.per_round}), "
                f"got {self.min_clients!r}"
            )
        if not self.rejoin_timeout > 0:
            raise ConfigError(f"--rejoin-timeout must be positive, got {self.rejoin_timeout}")

    @property
    def per_round(self) -> int:
        """How many clients train each round (--clients-per-round resolved; a fraction rounds up)."""
        k = self.clients_per_round
        if k == 0:
            return self.clients
        return int(k) if k >= 1 else max(1, math.ceil(k * self.clients))

    def _check_privacy(self) -> None:
        """Apply ``--privacy`` to the settings left at their defaults, then check them."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in preset_settings(self.privacy, lambda n: getattr(self, n) == defaults[n]).items():
            object.__setattr__(self, name, value)
        if self.wire_compress != "none":  # (splitfed.compress loads torch, which `splitfed --help` never does)
            from splitfed.compress import parse_codec

            parse_codec(self.wire_compress)
        for name in ("dp_clip", "dp_noise", "nopeek"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.dp_noise and not self.dp_clip:
            raise ConfigError("--dp-noise is in units of the clipping bound: give --dp-clip too (e.g. --dp-clip 1)")

    @property
    def max_bytes(self) -> int:
        return self.max_message_mb * 1024 * 1024

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}")
        privacy = data.get("privacy", "none")
        # a saved setting already holds what the preset gave it (or what was given over it): applying the
        # preset again would change one saved at its default value, e.g. in a run made under an earlier
        # version of the preset, whose checkpoint would then no longer match its config. So the preset only
        # fills the settings the file leaves out (a config written by hand), as it fills flags left out
        # (a setting the preset does not give, such as the optimizer its lr needs, is left out at its default too)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        preset = PRIVACY_PRESETS.get(privacy, {})

        def left_out(name: str) -> bool:
            return name not in data if name in preset else data.get(name, defaults[name]) == defaults[name]

        config = cls(**{**preset_settings(privacy, left_out), **data, "privacy": "none"})
        object.__setattr__(config, "privacy", privacy)
        return config

    @classmethod
    def from_file(cls, path: Any) -> RunConfig:
        """The settings in a run's config.json (which also records facts such as the classes)."""
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; give the config.json of a run folder")
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)


#: Fields the server decides and sends to clients in ``welcome``; the rest are per party.
TRAINING_FIELDS = (
    "protocol",
    "clients",
    "epochs",
    "local_epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup",
    "label_smoothing",
    "clip_grad",
    "val_fraction",
    "early_stop",
    "model",
    "cut",
    "seed",
    "wire_dtype",
    "wire_compress",
    "dp_clip",
    "dp_noise",
    "nopeek",
    "privacy",
    "precision",
    "augment",
    "timeout",
    "max_message_mb",
    "options",
)
