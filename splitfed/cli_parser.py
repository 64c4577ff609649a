"""The ``splitfed`` command line: every subcommand, flag and help text (the commands are in cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from splitfed import __version__, registry
from splitfed.config import OPTIMIZERS, PRECISION_NAMES, PRIVACY_PRESETS, SCHEDULES, WIRE_DTYPES, RunConfig
from splitfed.declaration import Declaration
from splitfed.protocol import DataRequest, ProtocolSpec

#: what a parser needs of a protocol: its light declaration, or the spec of a plugin that registers no declaration
Declared = Declaration | ProtocolSpec

BUILTIN_NOTE = "digits = scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes), no download"


def _training_flags(p: argparse.ArgumentParser, spec: Declared | None) -> None:
    d = RunConfig(protocol="-")
    g = p.add_argument_group("training")
    split = spec is None or spec.distributed  # a protocol without clients has no cut and no wire: no such flags
    if split:
        g.add_argument(
            "--clients", type=int, default=d.clients, help="number of client processes (default %(default)s)"
        )
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="rounds of training; each round every client passes over its data --local-epochs times, "
        f"then weights are averaged and the global model is tested (default {d.epochs}; with --resume, the new total)",
    )
    g.add_argument(
        "--local-epochs",
        type=int,
        default=d.local_epochs,
        help="passes over its own data each client makes per round (default %(default)s)",
    )
    g.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="mini-batch size per client (default %(default)s)"
    )
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate of every optimizer (default %(default)s)")
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="optimizer of every model half; its state persists across batches and rounds (default %(default)s)",
    )
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (default %(default)s)")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="weight decay: decoupled with adamw (default 0.01), L2 with adam and sgd (default 0)",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d.schedule,
        help="learning rate by round, for every optimizer of the run alike: none (constant --lr), cosine (half a "
        "cosine from --lr toward 0, which it would reach one round after the last) or step (x0.1 after half "
        "and after three quarters of the rounds) "
        "(default %(default)s)",
    )
    g.add_argument(
        "--warmup",
        type=int,
        default=d.warmup,
        help="rounds of linear warmup (lr * round / warmup) before the schedule (default %(default)s)",
    )
    g.add_argument(
        "--label-smoothing",
        type=float,
        default=d.label_smoothing,
        help="label smoothing of the training loss, 0 to <1 (test loss is never smoothed) (default %(default)s)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of each client's training rows held out for validation (never test rows): every round is "
        "then validated too, best.pt keeps the round with the best validation accuracy, and summary.json reports "
        "it with its test accuracy; 0 = no validation (default %(default)s)",
    )
    g.add_argument(
        "--early-stop",
        type=int,
        default=d.early_stop,
        metavar="PATIENCE",
        help="end the run after PATIENCE rounds without a better validation accuracy (needs --val-fraction); "
        "0 = never (default %(default)s)",
    )
    g.add_argument(
        "--clip-grad",
        type=float,
        default=d.clip_grad,
        help="clip the gradient norm of each optimizer's parameters to this before it steps; 0 = off "
        "(default %(default)s)",
    )
    if spec is None or spec.uses_model:  # FedSL and PyVertical build their own networks
        g.add_argument(
            "--model",
            default=d.model,
            help="auto: cnn for images under 32 px on their short side, mobilenet from 32 px up; "
            "cnn: compact 4-block CNN; cnn-deep: 5-block VGG-style CNN; cnn-narrow: cnn with an 8-channel waist "
            "at the end of its third block (default cut 3); "
            "mobilenet: 5-block depthwise-separable net; mobilenet-narrow: mobilenet whose last stage ends in a "
            "pool to at most 4x4 and an 8-channel waist, with a small MLP head (default cut 4, after the waist); "
            "mobilenet-private: mobilenet in 6 blocks, the fifth its global pool and a LayerNorm without weights, "
            "cut there by default (cut 5: 256 numbers per example leave the client; --privacy strong); "
            "resnet10: small 5-block ResNet; resnet18: torchvision ResNet-18 adapted "
            "to the input's channels (all but resnet18 use GroupNorm); "
            "or a factory of your own, package.module:factory or path/to/file.py:factory, "
            "called as factory(shape, n_classes) in every process and returning the model's blocks "
            "(see the README) (default %(default)s)",
        )
    if spec is None or spec.smashed:  # only the SplitFed protocols cut the model
        g.add_argument(
            "--cut",
            type=int,
            default=None,
            help="number of model blocks on the client side: 1 up to the model's blocks less one (cnn and "
            "cnn-narrow 4 blocks, cnn-deep, mobilenet, mobilenet-narrow and resnet10 5, mobilenet-private and resnet18 "
            "6); default 1 (the first conv block or stem), cnn-narrow 3 and mobilenet-narrow 4 (at the waist), "
            "mobilenet-private 5 (after the pool), resnet18 2 (after the first residual stage, as in SplitFed), a "
            "factory its default_cut",
        )
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seeds the model, the data split and every batch order: the same seed gives the same numbers "
        "(default %(default)s)",
    )
    if spec is None or spec.smashed or (spec.distributed and not spec.uses_model):  # what sends activations
        g.add_argument(
            "--wire-dtype",
            choices=WIRE_DTYPES,
            default=d.wire_dtype,
            help="dtype of activations and gradients on the wire; float16/bfloat16 halve the bytes "
            "(default %(default)s)",
        )
    g.add_argument(
        "--precision",
        choices=PRECISION_NAMES,
        default=d.precision,
        help="compute precision of every model step (Lightning's names): 32 = float32; bf16-mixed = bfloat16 "
        "autocast (about half the step time on CPUs with AVX512-BF16/AMX and on recent GPUs); 16-mixed = float16 "
        "autocast, without loss scaling. Weights, optimizer state and the wire stay float32 (default %(default)s)",
    )
    g.add_argument(
        "--augment",
        default=d.augment,
        help="augmentation of training batches, done by each client on its own rows (evaluation never augments): "
        "auto = standard for image folders and manifests, none for the built-in digits and for data from a "
        "function; none; standard = random flip, rotation ±10°, scale 0.9-1.1, shift ±6%%, brightness, contrast; "
        "standard-noflip; or package.module:name, a function augment(x, generator) of your own. "
        "Seeded from --seed (default %(default)s)",
    )
    if spec is None or spec.smashed:  # only where activations and gradients cross the wire the SplitFed way
        _privacy_flags(p, d)
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N, for every party (default %(default)s)")
    r.add_argument(
        "--timeout",
        type=float,
        default=d.timeout,
        help="seconds of silence after which a peer is reported lost (default %(default)s)",
    )
    r.add_argument(
        "--join-timeout",
        type=float,
        default=d.join_timeout,
        help="seconds the server waits for every client to join and load its data (default %(default)s)",
    )
    if split:  # who takes part in a round: only where there are clients
        r.add_argument(
            "--clients-per-round",
            type=float,
            default=d.clients_per_round,
            help="clients that train each round, sampled from the connected ones (seeded by --seed, recorded in "
            "metrics.jsonl): a whole number K, or a fraction of --clients (0.5); 0 = every client "
            "(default %(default)s). sflv1, sflv2, sl and fedavg",
        )
        r.add_argument(
            "--min-clients",
            type=int,
            default=d.min_clients,
            help="with M >= 1, a lost client is dropped from its round (its work in that round discarded), the round "
            "finishes with the others, and a round starts only with M connected (see --rejoin-timeout); clients may "
            "rejoin and join late; 0 = a lost client ends the run (default %(default)s). sflv1, sflv2, sl and fedavg",
        )
        r.add_argument(
            "--rejoin-timeout",
            type=float,
            default=d.rejoin_timeout,
            help="with --min-clients: seconds the server waits before a round for members to (re)join when fewer "
            "than --min-clients are connected, before it fails keeping the checkpoint (default %(default)s)",
        )
    r.add_argument(
        "--max-message-mb",
        type=int,
        default=d.max_message_mb,
        help="largest message accepted, in MiB; larger ones are rejected (default %(default)s)",
    )
    r.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="write checkpoint.pt every N rounds; 0 = never (default %(default)s)",
    )
    r.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch threads per process; 0 = the cores shared among the parties that compute at the same time: "
        "SFLv1/FedAvg clients each get cores/clients (the server steps its copies side by side while they wait), "
        "in SFLv2 and SL the party holding the turn gets all of them (default %(default)s)",
    )
    r.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write every round's scalars (losses, accuracies, macro-F1, bytes, seconds) as a TensorBoard "
        "event file in the run folder, next to metrics.jsonl; needs pip install 'splitfed[tensorboard]' "
        "(default off)",
    )
    r.add_argument("--out", type=Path, default=None, help="run folder (default runs/<protocol>-<timestamp>/)")
    if spec is not None and spec.options:
        _protocol_flags(p.add_argument_group(f"{spec.name} options"), spec)
    if spec is not None and spec.defaults:
        p.set_defaults(**spec.defaults)


def _privacy_flags(p: argparse.ArgumentParser, d: RunConfig) -> None:
    """What crosses the wire from a client: compression and defences of the cut activations."""
    g = p.add_argument_group("privacy and compression of the smashed data (sflv1, sflv2, sl)")
    g.add_argument(
        "--wire-compress",
        default=d.wire_compress,
        help="lossy codec of activations and gradients on the wire: none; int8 (one scale per channel, "
        "1/4 of float32's bytes); int8:stochastic (unbiased stochastic rounding); topk:F (each example keeps "
        "its largest-magnitude fraction F, sent as values and int32 positions) (default %(default)s)",
    )
    g.add_argument(
        "--dp-clip",
        type=float,
        default=d.dp_clip,
        metavar="C",
        help="clip each example's cut activations to L2 norm C on the client before they leave; 0 = off "
        "(default %(default)s)",
    )
    g.add_argument(
        "--dp-noise",
        type=float,
        default=d.dp_noise,
        metavar="SIGMA",
        help="add Gaussian noise of std SIGMA*C to every activation that leaves a client, in training and "
        "evaluation (needs --dp-clip). A measured defence, not a formal DP guarantee: no privacy accounting "
        "(default %(default)s)",
    )
    g.add_argument(
        "--nopeek",
        type=float,
        default=d.nopeek,
        metavar="WEIGHT",
        help="NoPeek: add WEIGHT * distance correlation(inputs, activations) of each batch to the client's "
        "loss; 0 = off (default %(default)s)",
    )
    strong = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in PRIVACY_PRESETS["strong"].items())
    g.add_argument(
        "--privacy",
        choices=tuple(PRIVACY_PRESETS),
        default=d.privacy,
        help="a preset for the flags above, --model, --cut and --lr, for those left at their defaults: "
        f"strong = {strong} (its cut only with its model, its lr only with the default optimizer) "
        "(measured on upscaled digits and on the learning-quality proxy, not on real eye crops: the README's "
        "privacy section says what it stops, what not, and at what cost) (default %(default)s)",
    )


def _protocol_flags(group: argparse._ArgumentGroup, spec: Declared) -> None:
    """One flag per protocol :class:`~splitfed.protocol.Option`; values are checked by ``spec.option_values``."""
    for option in spec.options:
        group.add_argument(
            option.flag,
            dest=option.name,
            type=option.type,
            default=option.default,
            choices=option.choices,
            help=option.help if "default" in option.help else f"{option.help} (default %(default)s)",
        )


def _data_flags(p: argparse.ArgumentParser, *, client: bool) -> None:
    d = DataRequest()
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        default=d.source,
        help=f"'digits' (built-in: {BUILTIN_NOTE}), a folder with manifest.csv (from `splitfed preprocess`), "
        "or a folder with one sub-folder of images per class (default %(default)s)",
    )
    g.add_argument(
        "--partition",
        default=d.partition,
        help="how training rows are shared among clients: iid, subject (whole people per client) or "
        "dirichlet:ALPHA (label skew; smaller ALPHA = more skew) (default %(default)s)",
    )
    g.add_argument(
        "--test-split",
        choices=("random", "subject"),
        default=d.test_split,
        help="random (stratified by class) or subject (no person in both train and test) (default %(default)s)",
    )
    g.add_argument(
        "--test-fraction",
        type=float,
        default=d.test_fraction,
        help="share of rows (or of people, with --test-split subject) held out for testing (default %(default)s)",
    )
    if client:
        g.add_argument(
            "--data-seed",
            type=int,
            default=0,
            help="seed of the split and partition; same on every client (default %(default)s)",
        )
        g.add_argument(
            "--shard",
            choices=("auto", "all"),
            default="all",
            help="all: train on this machine's whole dataset (default; a client that joins a run after its start "
            "must bring its own data this way); auto: take the part of a shared dataset that the server's client "
            "index assigns (how `splitfed run` simulates clients)",
        )


#: commands whose parsers list every protocol's flags (reading the declarations: no torch for the built-in ones)
_PROTOCOL_COMMANDS = ("run", "server")


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command line about to be parsed, only what it needs.

    ``splitfed --help``, ``splitfed client ...`` and the like never read a protocol's declaration:
    the protocols' sub-parsers are built only for ``run`` and ``server``, from the light
    declarations (:func:`splitfed.registry.declared`), so their ``--help`` imports no torch either.
    """
    parser = argparse.ArgumentParser(prog="splitfed", description="Split-federated deep learning over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"splitfed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    names = registry.available()
    wanted = argv is None or _command_in(argv) in _PROTOCOL_COMMANDS
    specs = {n: registry.declared(n) for n in names} if wanted else {}
    run = sub.add_parser(
        "run",
        help="train with one server and N client processes on this machine",
        description="Start one server and N client processes on this machine, talking over ZeroMQ, and train. "
        "PROTOCOL is one of those listed below; see `splitfed run PROTOCOL --help` for its flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_sub = run.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    for name, spec in specs.items():
        p = run_sub.add_parser(
            name,
            allow_abbrev=False,  # --clients must never be taken for --clients-per-round
            help=spec.summary,
            description=f"{name}: {spec.summary}.\n\n"
            "Writes config.json, metrics.jsonl, summary.json, curves.png and confusion.png into the "
            "run folder; the last line printed is the path of summary.json.",
        )
        _training_flags(p, spec)
        _data_flags(p, client=False)
        p.add_argument(
            "--transport",
            choices=("tcp", "ipc"),
            default="tcp",
            help="tcp (loopback) or ipc (unix socket) between the local processes (default %(default)s)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress output")
        p.add_argument(
            "--encrypt",
            action="store_true",
            help="encrypt every connection with CurveZMQ (a fresh server key pair in RUN/keys)",
        )
        p.add_argument(
            "--resume",
            type=Path,
            default=None,
            metavar="RUN",
            help="continue the run folder RUN from its checkpoint.pt with its own settings (--epochs sets a new "
            "total); optimizer states come back too (the server's and each client's), metrics.jsonl goes on "
            "(default: none, a new run)",
        )

    server = sub.add_parser(
        "server",
        help="run the server of a multi-machine run",
        description="Run the server; clients join with `splitfed client --server tcp://HOST:PORT`.",
    )
    _server_flags(server)
    srv_sub = server.add_subparsers(
        dest="protocol", metavar="PROTOCOL", help="the protocol to serve (or none, with --config RUN/config.json)"
    )
    for name, spec in specs.items():
        p = srv_sub.add_parser(name, help=spec.summary, allow_abbrev=False)
        _training_flags(p, spec)
        _data_flags(p, client=False)  # used where the server holds data (PyVertical's labels)
        _server_flags(p)
        _defer_to_parent(p, server)

    client = sub.add_parser(
        "client",
        help="run one client of a multi-machine run",
        description="Join a server, receive the run's configuration from it, train on local data.",
    )
    client.add_argument("--server", required=True, help="the server's address, e.g. tcp://10.0.0.5:5555 (required)")
    client.add_argument(
        "--insecure",
        action="store_true",
        help="talk to a server on another machine without --server-key: in plain text, without checking who answers",
    )
    client.add_argument(
        "--name",
        default=None,
        help="this client's name, unique in the run (default client-<host>-<pid>; required with --state-dir, "
        "and with an allow-list it must be the name its key is listed under)",
    )
    client.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")
    client.add_argument(
        "--timeout", type=float, default=60.0, help="seconds before the server counts as lost (default %(default)s)"
    )
    client.add_argument(
        "--join-timeout",
        type=float,
        default=600.0,
        help="seconds to keep trying to reach the server at the start (default %(default)s)",
    )
    client.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores (default %(default)s)")
    client.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="a folder where this client keeps what it owns (its optimizer state; a PyVertical owner's head) "
        "at every checkpointed round, so that `splitfed server --resume` continues exactly "
        "(default: none; a resumed run then restarts this client's optimizer)",
    )
    client.add_argument(
        "--server-key",
        type=Path,
        default=None,
        help="the server's public key file (NAME.key): encrypt with CurveZMQ and verify the server "
        "(default: none, plain text)",
    )
    client.add_argument(
        "--curve-secret",
        type=Path,
        default=None,
        help="this client's NAME.key_secret, for servers that allow-list clients (default: a fresh key per run)",
    )
    _data_flags(client, client=True)

    b = sub.add_parser(
        "bench",
        help="compare protocols side by side on the same data, model, epochs and seeds",
        description="Run each protocol as a real multi-process run (one after another) with the same settings, "
        "then write results.csv, results.md, curves.png, confusion_<protocol>.png and every run folder.",
    )
    b.add_argument(
        "--protocols",
        nargs="+",
        default=names,
        metavar="PROTOCOL",
        help="protocols to compare, as --protocols sflv1 fedavg (like --seeds; commas work too) "
        f"(default: all: {' '.join(names)})",
    )
    b.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[2],
        help="clients per run; several (2 5 10) sweep every protocol over them, with results.md and clients.png "
        "against the number of clients; centralized always uses one (default 2)",
    )
    b.add_argument("--epochs", type=int, default=10, help="rounds per run (default %(default)s)")
    b.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds; figures are mean ± std over several (default 0)"
    )
    b.add_argument(
        "--model",
        default="auto",
        help="model of every protocol that takes one: a built-in name or package.module:factory (default %(default)s)",
    )
    b.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default %(default)s)")
    b.add_argument(
        "--timeout-per-run",
        type=float,
        default=3600,
        help="seconds before a run counts as failed (default %(default)s)",
    )
    b.add_argument("--out", type=Path, default=None, help="result folder (default bench/<timestamp>/)")
    _data_flags(b, client=False)

    pre = sub.add_parser(
        "preprocess",
        help="crop the eye region of face photos into a dataset (also: eye-crop)",
        description="Detect each face, level the eyes and crop the eye region (eyes, brows, lower "
        "forehead); writes crops, manifest.csv, report.json and contact_sheet.png.",
    )
    from splitfed.preprocessing.cli import add_arguments as preprocess_arguments

    preprocess_arguments(pre)

    keys = sub.add_parser(
        "keys",
        help="create the CurveZMQ keys of a run across machines, and print the commands that use them",
        description="With --clients: write the server's key pair, one pair per client and the allow-list "
        "(DIR/server/, DIR/NAME/, DIR/allowed/), secret files readable by their owner only, and print the exact "
        "server and client commands. Without: one pair, DIR/NAME.key (public) and DIR/NAME.key_secret.",
    )
    keys.add_argument("folder", type=Path, help="where to write the key files")
    keys.add_argument(
        "--clients",
        default=None,
        help="comma-separated client names, e.g. hospital-a,hospital-b; each client must then run with its "
        "name (--name), which its key is bound to (default: none, one key pair)",
    )
    keys.add_argument(
        "--name", default="server", help="without --clients: the file name stem of the one pair (default %(default)s)"
    )

    ev = sub.add_parser(
        "evaluate",
        help="test a trained run's model: accuracy, macro-F1, per-class precision/recall, confusion matrix",
        description="Rebuild the model of the run folder RUN from its config.json and checkpoint, and test it on "
        "the run's own held-out test rows (or on every row of --data). Writes evaluation.json and confusion.png "
        "into RUN/evaluation/ (or --out). Works for every protocol whose run folder holds the whole model "
        "(sflv1, sflv2, sl, fedavg, centralized, fedsl); a pyvertical run keeps its heads with their owners.",
    )
    ev.add_argument("run", type=Path, metavar="RUN", help="a run folder (with config.json and checkpoint.pt)")
    ev.add_argument(
        "--data",
        default=None,
        help="test on every row of this dataset instead (a folder or an import path, with the run's classes "
        "and input shape) (default: the run's held-out test rows)",
    )
    ev.add_argument(
        "--checkpoint",
        default="last",
        help="the weights to test: last (RUN/checkpoint.pt, the last checkpointed round), best (RUN/best.pt, the "
        "round with the best validation accuracy, kept with --val-fraction) or a file (default %(default)s)",
    )
    ev.add_argument("--out", type=Path, default=None, help="where to write the results (default RUN/evaluation/)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")
    ev.add_argument("--json", action="store_true", help="print evaluation.json instead of a table")

    _attack_parser(sub)

    pr = sub.add_parser(
        "predict",
        help="the emotion in face photos: crop each eye region as the training data was, then classify",
        description="Find the face in each photo, level the eyes and crop the eye region exactly as `splitfed "
        "preprocess` cropped the run's training data (its settings are read from the data folder's report.json), "
        "then classify the crop with the run's model. Prints each photo's predicted class and the class "
        "probabilities. A photo without a detectable face is refused by name; the exit status is 1 if any was.",
    )
    pr.add_argument("run", type=Path, metavar="RUN", help="a run folder (with config.json and checkpoint.pt)")
    pr.add_argument("photos", type=Path, nargs="+", metavar="PHOTO", help="face photos (JPG, PNG, ...)")
    pr.add_argument(
        "--checkpoint",
        default="last",
        help="the weights to use: last, best (with --val-fraction) or a file (default %(default)s)",
    )
    pr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default %(default)s)")
    pr.add_argument("--json", action="store_true", help="print one JSON list of the predictions")

    sub.add_parser("protocols", help="list the available protocols")
    say_switch_defaults(parser)
    return parser


def say_switch_defaults(parser: argparse.ArgumentParser) -> None:
    """Every on/off flag says that it is off unless given, in every sub-command (``--help`` shows all defaults)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                say_switch_defaults(sub)
        elif isinstance(action, argparse._StoreTrueAction) and action.help and "default" not in action.help:
            action.help += " (default off)"


def _defer_to_parent(sub: argparse.ArgumentParser, parent: argparse.ArgumentParser) -> None:
    """Options that ``parent`` defines too mean the same before and after PROTOCOL.

    argparse copies every attribute of a sub-parser's namespace over the parent's, defaults
    included, so a sub-parser default would silently replace a value given before
    PROTOCOL (``splitfed server --address X sflv1`` listened on the default address). A
    sub-parser therefore sets such an option only when it is given after PROTOCOL.
    """
    shared = {a.dest: a for a in parent._actions if a.option_strings and a.dest != "help"}
    for action in sub._actions:
        if action.dest in shared:
            default = shared[action.dest].default
            if action.help and "%(default)s" in action.help:
                action.help = action.help.replace("%(default)s", str(default))
            action.default = argparse.SUPPRESS


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default="tcp://127.0.0.1:5555",
        help="where to listen: tcp://HOST:PORT or ipc://PATH (default %(default)s: this machine only). An address "
        "other machines can reach (e.g. tcp://0.0.0.0:5555) needs --curve-secret and --curve-clients, or --insecure",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a server that other machines can reach without keys: anyone who reaches it can join, and "
        "everything crosses the network in plain text",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a config.json of an earlier run: take every training setting from it (default: none, the flags)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.pt, optimizer states included (clients bring "
        "theirs from their --state-dir); metrics.jsonl goes on",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--curve-secret",
        type=Path,
        default=None,
        help="the server's NAME.key_secret (from `splitfed keys`): encrypt every connection with CurveZMQ "
        "(default: none, plain text)",
    )
    p.add_argument(
        "--curve-clients",
        type=Path,
        default=None,
        help="with --curve-secret: a folder of client public keys (NAME.key); only those may join "
        "(default: none, any client that has the server's public key)",
    )
    if not any(a.dest == "threads" for a in p._actions):
        p.add_argument(
            "--threads", type=int, default=0, help="torch threads; 0 = cores divided by processes (default %(default)s)"
        )
        p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<protocol>-<timestamp>/)")


def _attack_parser(sub: argparse._SubParsersAction) -> None:
    at = sub.add_parser(
        "attack",
        help="measure what the server can rebuild of the inputs (or, with --labels, infer of the labels) from a run",
        description="The input-reconstruction attack on the run folder RUN (sflv1, sflv2, sl): an attacker "
        "with an auxiliary sample disjoint from the victims trains a decoder from the run's client half "
        "(after the run's own clipping and noise) back to the images, then rebuilds the victims' held-out "
        "images. Prints SSIM and PSNR; writes attack.json and reconstructions.png (originals above "
        "reconstructions) into RUN/attack/ (or --out). Needs scikit-image (pip install 'splitfed[attack]'). "
        "With --labels: the label attack instead, on a run with --labels client: the server clusters the "
        "gradients it gets back at the client head's input by direction, one cluster per class; prints its "
        "accuracy at the run's first round and at its checkpoint against chance, writes label_attack.json.",
    )
    at.add_argument("run", type=Path, metavar="RUN", help="a run folder (with config.json and checkpoint.pt)")
    at.add_argument(
        "--aux",
        default=None,
        help="the attacker's own data (a folder or an import path, same input shape), all of it (default: half "
        "the run's held-out test rows, by person where the data has person ids; the victims are the rest)",
    )
    at.add_argument(
        "--labels",
        action="store_true",
        help="run the label-inference attack on the returned gradients instead (for a --labels client run; "
        "in any other the labels crossed the wire)",
    )
    at.add_argument(
        "--victims",
        type=int,
        default=None,
        help="held-out rows to attack (default 64 images to rebuild; 256 rows with --labels)",
    )
    at.add_argument("--width", type=int, default=32, help="the decoder's channels (default %(default)s)")
    at.add_argument("--epochs", type=int, default=20, help="the decoder's training epochs (default %(default)s)")
    at.add_argument(
        "--depth",
        type=int,
        default=0,
        help="extra 3x3 convolutions in the decoder after its first layer and after each upsampling (default "
        "%(default)s)",
    )
    at.add_argument(
        "--lr",
        type=float,
        default=2e-3,
        help="the decoder's peak learning rate (Adam, cosine down to 0; default %(default)s)",
    )
    at.add_argument(
        "--sends",
        type=int,
        default=1,
        help="the attacker links this many noisy sends of each victim and averages them, and trains on such "
        "averages: the test pass sends every held-out row each round, in the same order (default %(default)s; "
        "it matters only against --dp-noise)",
    )
    at.add_argument("--seed", type=int, default=0, help="seeds the decoder and its batches (default %(default)s)")
    at.add_argument("--out", type=Path, default=None, help="where to write the results (default RUN/attack/)")


def protocol_flags(protocol: str) -> set[str]:
    """The flags ``splitfed run PROTOCOL`` lists (a protocol leaves out those it has no use for)."""
    parser = build_parser(["run", protocol])
    for name in ("run", protocol):
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return {s for a in parser._actions for s in a.option_strings}
