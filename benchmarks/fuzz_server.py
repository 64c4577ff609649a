"""A real sflv1 run (server + 2 client processes, tcp loopback) under attack by strangers.

    python benchmarks/fuzz_server.py [--epochs 40] [--seed 0] [--pause 0.0005]

From the end of the join to the end of the run, a stranger socket sends malformed and
hostile messages (see ``splitfed.fuzzing.Stranger``). Prints messages sent and rejected,
crashes (a failed run), whether the final figures equal those of the same run without the
attack, and the server's peak memory with and without it. Not a test: the bounded,
seeded version is ``tests/test_link.py::test_a_fuzzed_server_finishes_the_run_with_the_same_figures``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from splitfed.fuzzing import run_with_strangers

FIGURES = ("test_loss", "test_accuracy", "train_loss", "train_accuracy", "test_macro_f1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="rounds of the run (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attack (default %(default)s)")
    parser.add_argument("--pause", type=float, default=0.0005, help="seconds between messages (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        calm = run_with_strangers(Path(tmp) / "calm", epochs=args.epochs, attack_seed=None)
        started = time.monotonic()
        crashes, fuzzed = 0, None
        try:
            fuzzed = run_with_strangers(
                Path(tmp) / "fuzzed", epochs=args.epochs, attack_seed=args.seed, pause=args.pause
            )
        except RuntimeError as exc:
            crashes = 1
            print(f"the run failed under attack: {exc}")
        seconds = time.monotonic() - started
    print(f"rounds {args.epochs}, attack seed {args.seed}, {seconds:.1f} s under attack")
    if fuzzed is not None:
        same = all(fuzzed["summary"][k] == calm["summary"][k] for k in FIGURES)
        print(f"messages sent by strangers: {fuzzed['sent']}")
        print(f"messages rejected by the server: {fuzzed['summary']['messages_rejected']}")
        print(f"final figures equal to the run without strangers: {same}")
        print(f"server peak memory: {fuzzed['peak_mb']:.0f} MB under attack, {calm['peak_mb']:.0f} MB without")
    print(f"crashes: {crashes}")


if __name__ == "__main__":
    main()
