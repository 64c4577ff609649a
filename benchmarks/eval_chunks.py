"""How many rows per forward pass evaluate fastest on this CPU (what ``EVAL_CHUNK`` in split_steps.py is set from).

Times the built-in models in eval mode, without autograd, over the same test rows in chunks of
several sizes, alternating the sizes; prints the best of ``--repeats`` per model and size.

    python benchmarks/eval_chunks.py --threads 1 --rows 98 --size 64x128
"""

from __future__ import annotations

import argparse
import time

import torch

from splitfed.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=98, help="test rows (98: a client's share of the 64x128 proxy)")
    parser.add_argument("--size", default="64x128", help="HEIGHTxWIDTH")
    parser.add_argument("--chunks", default="8,16,32,0", help="rows per pass; 0: all at once")
    parser.add_argument("--models", default="mobilenet,cnn,resnet10,cnn-narrow")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    x = torch.randn(args.rows, 1, height, width, generator=torch.Generator().manual_seed(0))
    chunks = [int(c) or args.rows for c in args.chunks.split(",")]
    print(f"{args.rows} rows of {height}x{width}, {args.threads} thread(s), best of {args.repeats}, ms")
    print("| model | " + " | ".join(f"{c} rows" for c in chunks) + " |")
    print("|---|" + "---|" * len(chunks))
    for name in args.models.split(","):
        model = build_model(name, (1, height, width), 7, 0).eval()
        best = {c: float("inf") for c in chunks}
        with torch.inference_mode():
            for _ in range(args.repeats):
                for c in chunks:
                    start = time.perf_counter()
                    for part in x.split(c):
                        model(part)
                    best[c] = min(best[c], time.perf_counter() - start)
        print(f"| {name} | " + " | ".join(f"{1000 * best[c]:.0f}" for c in chunks) + " |")


if __name__ == "__main__":
    main()
