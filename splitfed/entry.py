"""The ``splitfed`` command's first lines: a command that will fork parties starts their zygote first.

The zygote (:mod:`splitfed.runtime.zygote`) spends seconds importing torch before it can fork
anything, so ``splitfed run`` and ``splitfed bench`` start it here, before this process
imports the command line's parser and the protocols' declarations (about 0.1 s). Help, and
every other command, imports no torch and starts no zygote.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

#: the commands that fork parties from a zygote
FORKING = ("run", "bench")


def starts_zygote(argv: list[str]) -> bool:
    """Whether ``splitfed ARGV`` will fork from a zygote: run or bench, no help, not a party of a run."""
    command = next((a for a in argv if not a.startswith("-")), None)
    asks_help = {"-h", "--help", "--version"} & set(argv)
    return command in FORKING and not asks_help and not os.environ.get("SPLITFED_LOG_FILE")


def command() -> NoReturn:
    """The ``splitfed`` console script and ``python -m splitfed``: :func:`main`, then a quick exit.

    A finished command skips the interpreter's module teardown (splitfed.runtime.process_exit)."""
    from splitfed.runtime.process_exit import exit_now

    exit_now(main())


def main() -> int:
    """The ``splitfed`` command; its exit status."""
    argv = sys.argv[1:]
    if starts_zygote(argv):
        from splitfed.runtime import zygote

        if zygote.use_zygote():
            zygote.start()
    from splitfed.cli import main as cli_main

    return cli_main(argv)
