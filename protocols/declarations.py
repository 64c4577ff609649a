"""What each built-in protocol tells the command line: name, summary, options, facts (no torch).

These are the entry points of the ``splitfed.protocols`` group (pyproject.toml), so that
``splitfed protocols`` and every ``--help`` answer without importing torch. Each protocol's
module builds its ``SPEC`` from its declaration here (``SFLV1.with_roles(...)``); ``roles``
names that module, imported only when a run needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from splitfed.declaration import Declaration, Option


def _at_least(minimum: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")

    return check


def _positive(value: int) -> None:
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")


def _share(value: float) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value}")


# --- the U-shaped split of sflv1 and sflv2 and its defences (protocols/label_private.py) ---

LABELS = Option(
    "labels",
    str,
    "server",
    "who holds the labels: the server (default: they travel with the activations, as in the SplitFed paper) "
    "or the client, which keeps the model's last --head-blocks blocks too (the U-shaped split): the server "
    "runs the middle and never receives labels, logits or a batch's loss (it does get each client's round "
    "totals and test confusion matrix, for the metrics)",
    choices=("server", "client"),
)
HEAD_BLOCKS = Option(
    "head_blocks",
    int,
    1,
    "with --labels client: how many of the model's last blocks the client keeps as its head (default 1, "
    "the classifier block); --cut plus this must leave the server at least one block",
    check=_positive,
)


def _non_negative(value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"must be a finite number >= 0 (0 = off), got {value}")


LABEL_CLIP = Option(
    "label_clip",
    float,
    0.0,
    "with --labels client: each example's gradient at the head's input (of its own loss) is scaled on the client "
    "to an L2 norm of at most LABEL_CLIP before it is sent (default 0: off)",
    check=_non_negative,
)
LABEL_NOISE = Option(
    "label_noise",
    float,
    0.0,
    "with --labels client and --label-clip: Gaussian noise of std LABEL_NOISE x LABEL_CLIP is added on the client "
    "to every element of each example's clipped gradient at the head's input, in every training batch (default 0: "
    "off); a defence against the label attack, measured by `splitfed attack RUN --labels`, not an (epsilon, delta) "
    "guarantee",
    check=_non_negative,
)
HEADS = Option(
    "heads",
    str,
    "averaged",
    "with --labels client: averaged (default: the clients' heads are FedAvg'd through the server, so the server "
    "holds the whole model and can classify what it receives) or local (each client keeps its own head, which "
    "never leaves it; only fronts are averaged; --resume needs each client's own state file)",
    choices=("averaged", "local"),
)
LABEL_OPTIONS = (LABELS, HEAD_BLOCKS, LABEL_CLIP, LABEL_NOISE, HEADS)
#: SFLv2's orders of the clients' turns
ORDERS = ("sequential", "interleaved")

SFLV1 = Declaration(
    name="sflv1",
    summary="SplitFed v1: clients train in parallel, one server-half copy per client, both halves FedAvg'd per round",
    roles="splitfed.protocols.sflv1:SPEC",
    smashed=True,
    options=LABEL_OPTIONS,
)

SFLV2 = Declaration(
    name="sflv2",
    summary="SplitFed v2: one server half trained on clients in a random order each round; client halves FedAvg'd",
    roles="splitfed.protocols.sflv2:SPEC",
    smashed=True,
    parallel_clients=False,
    options=(
        *LABEL_OPTIONS,
        Option(
            "order",
            str,
            "sequential",
            "sequential (default, as the reference code): each client runs its whole local epoch in its turn; "
            "interleaved (as the paper): one batch per client, round-robin in the round's random order",
            choices=ORDERS,
        ),
    ),
)

SL = Declaration(
    name="sl",
    summary="Vanilla split learning: clients take turns on one model, handing the client half on",
    roles="splitfed.protocols.sl:SPEC",
    smashed=True,
    parallel_clients=False,
)

FEDAVG = Declaration(
    name="fedavg",
    summary="FedAvg baseline: each client trains the whole model locally, weights averaged by sample count",
    roles="splitfed.protocols.fedavg:SPEC",
)

CENTRALIZED = Declaration(
    name="centralized",
    summary="Centralised baseline: one process trains the unsplit model on all training rows pooled",
    roles="splitfed.protocols.centralized:SPEC",
    distributed=False,
)

FEDSL = Declaration(
    name="fedsl",
    summary="FedSL: recurrent network split along the sequence, one segment per client, averaged per position",
    roles="splitfed.protocols.fedsl:SPEC",
    options=(
        # the cells and encoders of splitfed.models.rnn (CELLS, ENCODERS; a test checks they agree)
        Option("cell", str, "gru", "recurrent cell", choices=("gru", "lstm", "rnn")),
        Option(
            "segments",
            int,
            2,
            "segments per sequence = clients per group; --clients must be a multiple "
            "(--clients 4 --segments 2 gives two groups)",
            check=_at_least(2),
        ),
        Option(
            "sequence",
            str,
            "rows",
            "rows: time runs down the image, features = width x channels; cols: across",
            choices=("rows", "cols"),
        ),
        Option("hidden", int, 128, "hidden units per sub-network", check=_at_least(1)),
        Option(
            "encoder",
            str,
            "conv",
            "none: each time step's pixels go straight into the recurrent cell; conv: through a small "
            "1-D CNN first (per step, shared by the segment's steps)",
            choices=("none", "conv"),
        ),
    ),
    defaults={"lr": 3e-3},
    augments="bands",
    uses_model=False,
    validates=False,
)

PYVERTICAL = Declaration(
    name="pyvertical",
    summary="PyVertical: each client holds a vertical band of the same samples, aligned by PSI; labels on the server",
    roles="splitfed.protocols.pyvertical:SPEC",
    options=(
        Option(
            "labels",
            str,
            "server",
            "who holds the labels: the server (default, OpenMined's 'data scientist') or client 1, "
            "which then runs PSI with the other owners through the server and computes the loss on "
            "the logits the server sends it, so labels never leave it",
            choices=("server", "client"),
        ),
        Option(
            "overlap",
            float,
            1.0,
            "simulated share of all samples each owner holds (sampled independently per owner; the "
            "intersection is found by PSI)",
            check=_share,
        ),
        Option(
            "head",
            str,
            "cnn",
            "each owner's network over its band: basic (two full-resolution convolutions) or cnn "
            "(three GroupNorm conv blocks with pooling; the default)",
            choices=("basic", "cnn"),  # splitfed.models.vertical.HEADS (a test checks they agree)
        ),
    ),
    augments="bands",
    uses_model=False,
    validates=False,
)
