"""The ``splitfed`` command: run, server, client, protocols."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from splitfed import registry
from splitfed.api import default_out
from splitfed.cli_parser import _command_in, build_parser
from splitfed.config import RunConfig
from splitfed.errors import ConfigError, SplitFedError, Terminated
from splitfed.protocol import DataRequest, ProtocolSpec
from splitfed.timeline import mark, set_party


def _given(args: argparse.Namespace, name: str) -> object:
    """A flag's value, or RunConfig's default where the protocol does not list the flag."""
    return getattr(args, name, RunConfig.__dataclass_fields__[name].default)


def config_from_args(args: argparse.Namespace, spec: ProtocolSpec) -> RunConfig:
    return RunConfig(
        protocol=spec.name,
        clients=getattr(args, "clients", 1) if spec.distributed else 1,
        epochs=args.epochs if args.epochs is not None else RunConfig.__dataclass_fields__["epochs"].default,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup=args.warmup,
        label_smoothing=args.label_smoothing,
        clip_grad=args.clip_grad,
        val_fraction=args.val_fraction,
        early_stop=args.early_stop,
        model=_given(args, "model"),
        cut=getattr(args, "cut", None),
        seed=args.seed,
        **{name: _given(args, name) for name in ("wire_dtype", "wire_compress", "dp_clip", "dp_noise", "nopeek")},
        privacy=_given(args, "privacy"),
        precision=_given(args, "precision"),
        augment=args.augment,
        data=getattr(args, "data", "digits"),
        partition=getattr(args, "partition", "iid"),
        test_split=getattr(args, "test_split", "random"),
        test_fraction=getattr(args, "test_fraction", 0.2),
        device=args.device,
        timeout=args.timeout,
        join_timeout=args.join_timeout,
        **{name: _given(args, name) for name in ("clients_per_round", "min_clients", "rejoin_timeout")},
        max_message_mb=args.max_message_mb,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
        tensorboard=args.tensorboard,
        options=spec.option_values({o.name: getattr(args, o.name) for o in spec.options}),
    )


def setup_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    log_file = os.environ.get("SPLITFED_LOG_FILE")
    handlers: list[logging.Handler] = []
    if log_file:
        handlers.append(logging.FileHandler(log_file))
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        handlers.append(console)
    else:
        handlers.append(logging.StreamHandler())
    logging.basicConfig(level=level, handlers=handlers, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def _cmd_run(args: argparse.Namespace) -> int:
    """``splitfed run`` in this process (``SPLITFED_NO_ZYGOTE=1``): the flags become a checked plan, then a run."""
    from splitfed.cli_run import finish, plan_run

    return finish(plan_run(args))


def final_line(s: dict) -> str:
    """The line a finished run prints: the same figures, and the same seconds per round, as summary.json."""
    training = s.get("train_seconds_per_round")
    return (
        f"test accuracy {s['test_accuracy']:.4f}  macro-F1 {s['test_macro_f1']:.4f}  test loss {s['test_loss']:.4f}  "
        f"train accuracy {s['train_accuracy']:.4f}  {s['seconds_per_round']:.2f} s/round"
        + (f" ({training:.2f} s training)" if training is not None else "")
        + f"  {s['wall_seconds']:.1f} s in all"
        + f"  up {s['bytes_sent'] / 1e6:.1f} MB  down {s['bytes_received'] / 1e6:.1f} MB"
    )


def print_summary(path: Path) -> None:
    print(final_line(json.loads(path.read_text())), file=sys.stderr)
    print(path)


def _cmd_server(args: argparse.Namespace) -> int:
    set_party("server")
    from splitfed.runtime.server import serve

    mark("runtime imported")
    if args.config is not None:
        config = RunConfig.from_file(args.config)
        config = config.replace(threads=args.threads) if args.threads else config
        config = config.replace(epochs=args.epochs) if getattr(args, "epochs", None) is not None else config
    elif args.protocol:
        config = config_from_args(args, registry.get(args.protocol))
    else:
        raise SplitFedError("name a protocol (splitfed server sflv1 ...) or give --config FILE")
    out = args.out or default_out(config.protocol)
    from splitfed.checks import check_run
    from splitfed.devices import resolve_device
    from splitfed.runtime.server import check_out_folder
    from splitfed.transport.schemes import check_between_processes
    from splitfed.transport.security import CurveServer, require_server_security

    check_between_processes(args.address, "--address")
    resolve_device(config.device)
    check_run(config, registry.get(config.protocol), with_data=False)  # the data is with the clients
    check_out_folder(out, args.resume)

    if args.curve_clients is not None and args.curve_secret is None:
        raise SplitFedError("--curve-clients needs --curve-secret: an allow-list only works on an encrypted server")
    curve = CurveServer(args.curve_secret, args.curve_clients) if args.curve_secret else None
    warning = require_server_security(args.address, curve, args.insecure)
    if warning:
        print(warning, file=sys.stderr)
    serve(config, args.address, out, progress=not args.quiet, curve=curve, resume=args.resume)
    print(out / "summary.json")
    return 0


def protocol_names(values: list[str]) -> list[str]:
    """``--protocols sflv1 fedavg``, as ``--seeds 0 1`` is given; ``sflv1,fedavg`` still works."""
    return [p.strip() for item in values for p in item.split(",") if p.strip()]


def _cmd_bench(args: argparse.Namespace) -> int:
    from splitfed.bench import bench

    protocols = protocol_names(args.protocols)
    for p in protocols:
        registry.declared(p)  # unknown names fail here, before any run starts
    common = [
        "--epochs",
        str(args.epochs),
        "--model",
        args.model,
        "--batch-size",
        str(args.batch_size),
        "--data",
        args.data,
        "--partition",
        args.partition,
        "--test-split",
        args.test_split,
        "--test-fraction",
        str(args.test_fraction),
    ]
    out = args.out or Path("bench") / time.strftime("%Y%m%d-%H%M%S")
    if len(args.clients) > 1:
        from splitfed.sweep import sweep_clients

        rows = sweep_clients(protocols, args.clients, common, args.seeds, out, timeout=args.timeout_per_run)
    else:
        rows = bench(protocols, ["--clients", str(args.clients[0]), *common], args.seeds, out, args.timeout_per_run)
    sys.stderr.write((out / "results.md").read_text())
    print(out / "results.md")
    return 0 if any(r["test_accuracy"] is not None for r in rows) else 1


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from splitfed.preprocessing.cli import run_from_args

    try:
        return run_from_args(args)
    except (FileNotFoundError, ValueError) as exc:
        raise SplitFedError(str(exc)) from exc


def _cmd_client(args: argparse.Namespace) -> int:
    set_party(args.name or "client")
    from splitfed.runtime.client import run_client

    mark("runtime imported")
    data = DataRequest(
        source=args.data,
        partition=args.partition,
        test_split=args.test_split,
        test_fraction=args.test_fraction,
        seed=args.data_seed,
        shard=args.shard,
    )
    from splitfed.transport.schemes import check_between_processes
    from splitfed.transport.security import CurveClient, require_client_security

    check_between_processes(args.server, "--server")
    if args.curve_secret is not None and args.server_key is None:
        raise SplitFedError("--curve-secret needs --server-key: give the server's public NAME.key file")
    if args.state_dir is not None and args.name is None:
        raise ConfigError("--state-dir needs --name: a client finds its own state by its name when a run resumes")
    curve = CurveClient(args.server_key, args.curve_secret) if args.server_key else None
    warning = require_client_security(args.server, curve, args.insecure)
    if warning:
        print(warning, file=sys.stderr)
    rounds = run_client(
        args.server,
        args.name or f"client-{socket.gethostname()}-{os.getpid()}",
        data,
        device=args.device,
        timeout=args.timeout,
        threads=args.threads,
        curve=curve,
        join_timeout=args.join_timeout,
        state_dir=args.state_dir,
    )
    logging.getLogger(__name__).info("%s finished after %d round(s)", args.name, rounds)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from splitfed.devices import resolve_device
    from splitfed.evaluate import evaluate_run

    resolve_device(args.device)
    report = evaluate_run(args.run, data=args.data, checkpoint=args.checkpoint, out=args.out, device=args.device)
    out = args.out or args.run / "evaluation"
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['protocol']} round {report['round']}, {report['data']}: accuracy {report['accuracy']:.4f}  "
        f"macro-F1 {report['macro_f1']:.4f}  loss {report['loss']:.4f}",
        file=sys.stderr,
    )
    width = max(len(c) for c in report["classes"])
    print(f"{'class':{width}s}  precision  recall     f1  support", file=sys.stderr)
    for name, row in report["per_class"].items():
        print(
            f"{name:{width}s}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  {row['support']:7d}",
            file=sys.stderr,
        )
    print(out / "evaluation.json")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from splitfed.attack_run import attack_run, label_attack_run

    if args.labels:
        if args.aux is not None:
            raise ConfigError("--aux is the reconstruction attack's data; the label attack takes none: leave it out")
        report = label_attack_run(args.run, victims=args.victims or 256, seed=args.seed, out=args.out)
        print(_label_attack_line(report), file=sys.stderr)
        print((args.out or args.run / "attack") / "label_attack.json")
        return 0
    report = attack_run(
        args.run,
        aux=args.aux,
        victims=args.victims or 64,
        width=args.width,
        epochs=args.epochs,
        depth=args.depth,
        lr=args.lr,
        sends=args.sends,
        seed=args.seed,
        out=args.out,
    )
    figures = f"SSIM {report['ssim']:.3f}  PSNR {report['psnr']:.1f} dB"
    known = f"the attacker's mean image scores SSIM {report['mean_image_ssim']:.3f}"
    print(f"cut {report['cut']}, attacker: {report['attacker']}: {figures}  ({known})", file=sys.stderr)
    print((args.out or args.run / "attack") / "attack.json")
    return 0


def _label_attack_line(report: dict) -> str:
    if report["labels"] != "client":
        return f"labels on the server: {report['note']} (run with --labels client to keep them home)"
    first, last = report["first_round"], report["checkpoint"]
    return (
        f"label attack on {last['examples']} rows: accuracy {first['accuracy']:.3f} at the first round, "
        f"{last['accuracy']:.3f} at the checkpoint (chance {last['chance']:.3f}; the same clusters against "
        f"shuffled labels: {first['shuffled']:.3f}, {last['shuffled']:.3f})"
    )


def _cmd_predict(args: argparse.Namespace) -> int:
    from splitfed.devices import resolve_device
    from splitfed.predict import predict_photos, require_some

    resolve_device(args.device)
    predictions = predict_photos(args.run, args.photos, checkpoint=args.checkpoint, device=args.device)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    for p in predictions:
        if p.error:
            print(f"error: {p.photo}: {p.error}", file=sys.stderr)
        elif not args.json:
            others = ", ".join(f"{name} {prob:.3f}" for name, prob in list(p.probabilities.items())[1:])
            print(f"{p.photo}: {p.label} {p.probabilities[p.label]:.3f}  ({others})")
    require_some(predictions)
    return 1 if any(p.error for p in predictions) else 0


def _raise_terminated(signum: int, frame: object) -> None:
    """SIGTERM: stop as Ctrl-C does, once; a second SIGTERM would break off the cleanup the first one started.

    A party forked from the zygote then takes SIGKILL, not the SIGTERM it now ignores, should the zygote
    die: with the zygote gone, nobody could stop or report it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from splitfed.runtime import zygote_main

    if zygote_main.ZYGOTE_PID not in (None, os.getpid()):
        from splitfed.runtime.zygote import bind_to_zygote

        bind_to_zygote(signal.SIGKILL)
    raise Terminated(f"signal {signum}")


def _cmd_keys(args: argparse.Namespace) -> int:
    from splitfed.transport.security import create_keys, make_federation

    if args.clients is None:
        public, secret = create_keys(args.folder, args.name)
        print(f"public key (give to clients): {public}\nsecret key (keep on the server): {secret}", file=sys.stderr)
        print(public)
        return 0
    fed = make_federation(args.folder, args.clients.split(","))
    print(f"keys written to {args.folder}; each secret file is readable by its owner only.", file=sys.stderr)
    print(f"On the server machine (keep {fed.server_secret} there, and nowhere else):")
    print(
        f"  splitfed server PROTOCOL --clients {len(fed.clients)} --address tcp://0.0.0.0:5555 "
        f"--curve-secret {fed.server_secret} --curve-clients {fed.allowed} ..."
    )
    for name, folder in fed.clients.items():
        print(f"On {name}'s machine (hand it the folder {folder}; its name is bound to its key):")
        print(
            f"  splitfed client --server tcp://SERVER_HOST:5555 --name {name} --server-key {folder / 'server.key'} "
            f"--curve-secret {folder / (name + '.key_secret')} --data ..."
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # SIGTERM stops a command the way Ctrl-C does: results so far are written, no traceback.
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        argv = sys.argv[1:] if argv is None else argv
        asks_help = {"-h", "--help"} & set(argv)  # help needs the protocols' flags, not the zygote's preloads
        if _command_in(argv) == "run" and not asks_help and not os.environ.get("SPLITFED_LOG_FILE"):
            from splitfed.runtime.zygote import use_zygote

            if use_zygote():  # this process imports no torch: the checks and the parties fork from a zygote
                setup_logging(bool({"-v", "--verbose"} & set(argv[: argv.index("run")])))
                from splitfed.cli_run import run_via_zygote

                return run_via_zygote(argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        mark("command parsed")
        setup_logging(args.verbose)
        if args.command == "protocols":
            for name in registry.available():
                print(f"{name:12s} {registry.declared(name).summary}")
            return 0
        commands = {
            "keys": _cmd_keys,
            "run": _cmd_run,
            "server": _cmd_server,
            "client": _cmd_client,
            "bench": _cmd_bench,
            "preprocess": _cmd_preprocess,
            "evaluate": _cmd_evaluate,
            "attack": _cmd_attack,
            "predict": _cmd_predict,
        }
        return commands[args.command](args)
    except SplitFedError as exc:
        if os.environ.get("SPLITFED_LOG_FILE"):  # a party of `splitfed run`: the launcher reports it, once
            logging.getLogger("splitfed").error("%s", exc, extra={"file_only": True})
        else:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # `run` reports the partial results; a server or client just stops
        return 130
    except Terminated:
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
