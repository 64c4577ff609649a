"""``splitfed run`` in two halves: the checks, which need torch, and the launch, which does not.

With the zygote (:mod:`splitfed.runtime.zygote`), the command process never imports torch:
:func:`run_via_zygote` forks a child of the zygote that parses the command line (loading the
protocol), checks everything (:func:`splitfed.api.prepare`: model, cut, data, device) and hands
back a *plan* (the config and the run folder); the command then forks the parties from the same
zygote. A bad setting gives one ``error:`` line, starts no party and leaves no run folder, as
before. ``splitfed bench`` runs each of its runs through :func:`execute`, so all share one zygote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from splitfed.config import RunConfig
from splitfed.errors import SplitFedError, Terminated
from splitfed.timeline import mark

#: seconds an interrupted check gets to stop on its own, then after SIGTERM
CHECK_SETTLE = 2.0


def plan_run(args: argparse.Namespace) -> dict[str, Any]:
    """Turn ``splitfed run``'s flags into a checked plan: the config, the run folder and how to launch it."""
    from splitfed import registry
    from splitfed.api import default_out, prepare
    from splitfed.cli import config_from_args
    from splitfed.cli_parser import BUILTIN_NOTE

    spec = registry.get(args.protocol)
    if args.resume is not None:
        config = RunConfig.from_file(args.resume / "config.json")
        if config.protocol != spec.name:
            raise SplitFedError(
                f"{args.resume} is a {config.protocol} run; resume it with `splitfed run {config.protocol}`"
            )
        config = config.replace(epochs=args.epochs) if args.epochs is not None else config
        out = args.resume
    else:
        config = config_from_args(args, spec)
        out = args.out or default_out(spec.name)
    prepare(config, out, resume=args.resume is not None)  # every check, before any process starts
    mark("checked")
    if not args.quiet:
        data = f"{config.data} ({BUILTIN_NOTE})" if config.data == "digits" else config.data
        print(
            f"splitfed {spec.name}: {config.clients} client(s), {config.epochs} epoch(s), data {data}", file=sys.stderr
        )
        print(f"run folder: {out}", file=sys.stderr)
    return {
        "config": config.to_dict(),
        "out": str(out),
        "resume": args.resume is not None,
        "transport": args.transport,
        "quiet": args.quiet,
        "encrypt": args.encrypt,
        "distributed": spec.distributed,
    }


def check_in_child(argv: list[str], env: dict[str, str], cwd: str, plan_path: str) -> None:
    """The zygote's child that parses and checks ``splitfed ARGV``; writes the plan, or the error, to ``plan_path``.

    Its exit status is the command's when it ends it: 0 after ``--help``, 2 for a usage error."""
    from splitfed.runtime.zygote import enter

    enter(argv, env, cwd, None, None)
    from splitfed.cli import setup_logging
    from splitfed.cli_parser import build_parser

    args = build_parser(argv).parse_args(argv)  # --help and usage errors exit here, printing as usual
    setup_logging(args.verbose)
    try:
        found: dict[str, Any] = plan_run(args)
        code = 0
    except SplitFedError as exc:
        found, code = {"error": str(exc)}, 1
    except KeyboardInterrupt:
        found, code = {"interrupted": True}, 130
    with contextlib.suppress(OSError):  # the command, interrupted, may have removed the folder already
        Path(plan_path).write_text(json.dumps(found))
    sys.exit(code)


def plan_via_zygote(argv: list[str]) -> tuple[int, dict[str, Any] | None]:
    """Check ``splitfed ARGV`` in a child of the zygote; return its exit status and the plan (None: no run).

    A check that fails raises its error here, in the launcher, which reports it as one ``error:`` line."""
    from splitfed.runtime import zygote

    with tempfile.TemporaryDirectory(prefix="splitfed-plan-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        args = (argv, dict(os.environ), os.getcwd(), str(plan_path))
        child = zygote.fork(check_in_child, *args, name="check")
        try:
            code = child.wait()  # raises SplitFedError if the zygote died before it forked the check
        except (KeyboardInterrupt, Terminated):  # the check ends before its folder goes
            _end_check(child)
            raise
        found = json.loads(plan_path.read_text()) if plan_path.exists() else None
    if found is not None and "error" in found:
        raise SplitFedError(found["error"])
    if code < 0:  # killed: by the out-of-memory killer, say
        raise SplitFedError(f"the checks were killed by {_signal_name(-code)} before they finished; no party started")
    if code != 0 or found is None or "config" not in found:
        return code, None  # 0 after --help, 2 after a usage error, 130 if interrupted
    return 0, found


def _end_check(child: Any) -> None:
    """Give an interrupted check a moment to stop on the signal it got too, then stop it. One the zygote had
    not forked yet got no signal (Ctrl-C while the zygote imports): it is cancelled at once, never forked."""
    if not child.forked:
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=CHECK_SETTLE)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=CHECK_SETTLE)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def execute(plan: dict[str, Any], timeout: float | None = None) -> Path:
    """Launch a checked plan's parties; return the path of summary.json. Raises SplitFedError."""
    from splitfed.runtime.launcher import launch

    return launch(
        RunConfig.from_dict(plan["config"]),
        Path(plan["out"]),
        resume=plan["resume"],
        transport=plan["transport"],
        quiet=plan["quiet"],
        encrypt=plan["encrypt"],
        distributed=plan["distributed"],
        timeout=timeout,
    )


def finish(plan: dict[str, Any]) -> int:
    """Run a checked plan as the ``splitfed run`` command does: the final line, or what an interruption left."""
    from splitfed.cli import print_summary

    out = Path(plan["out"])
    try:
        summary_path = execute(plan)
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"\ninterrupted; partial results in {out}", file=sys.stderr)
        if (out / "summary.json").exists():
            print(out / "summary.json")
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
    print_summary(summary_path)
    return 0


def run_via_zygote(argv: list[str]) -> int:
    """``splitfed run ...`` with the checks in a child of the zygote, and the parties forked from it.

    The zygote starts first: while it imports torch (seconds), this process imports what it needs
    to launch the parties (numpy, through the run folder's writer), which would otherwise come
    between the checks and the parties."""
    from splitfed.runtime import zygote

    zygote.start()
    import splitfed.runtime.launcher  # noqa: F401 - imported now, used by execute()

    code, plan = plan_via_zygote(argv)
    return finish(plan) if plan is not None else code
