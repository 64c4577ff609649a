"""Learning quality on a proxy harder than the 8x8 digits, as an ablation table.

The proxy is built offline from scikit-learn's bundled digits: each 8x8 digit is drawn
into a wide grayscale canvas (default 32x64, the eye crops' 1:2 shape) under its own random
rotation, scale and shift, on a random background level, with pixel noise; only
``--per-class`` images per class are kept (a few hundred training rows, as KDEF's ~800).
Every party then trains on it as a real folder of PNGs, exactly as on eye crops.

Each configuration adds one piece of the recipe to the one before:

    baseline        cnn, adam, lr 1e-3, no augmentation
    + augment       --augment standard-noflip  (fedsl, pyvertical: the same transform of each band)
    + schedule      --schedule cosine --warmup 2
    + smoothing     --label-smoothing 0.1
    + model         --model mobilenet  (not for fedsl/pyvertical)
    augment + model only   the two without the schedule and smoothing (not cumulative)

    python benchmarks/proxy_quality.py --epochs 15 --out bench/proxy

``--variants "sflv1" "sflv1 privacy=strong" --seeds 0,1,2,3,4`` compares protocol settings instead, averaged
over seeds (how the README's privacy section measured what ``--privacy strong`` costs).

``--models cnn,cnn-deep,mobilenet,resnet10`` runs the candidate models instead, each with
the augmentation and nothing else of the recipe, and tabulates final and best test accuracy,
training accuracy, seconds per round and parameters (the comparison behind the default
model for images of 32 px and up).

Runs go through ``splitfed.run(in_process=True)``: the same protocol code and messages as
processes, without paying process start-up per run. Prints a Markdown table of final test
accuracy (and the best round's) per protocol and configuration, and writes it to
OUT/results.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PROTOCOLS = ("centralized", "sflv1", "sflv2", "fedsl", "pyvertical")
WHOLE_EXAMPLES = ("centralized", "sflv1", "sflv2")  # augmentation and --model apply to these


def make_proxy(root: Path, *, per_class: int, size: tuple[int, int], seed: int, first: int = 0) -> Path:
    """Write the proxy image folder (ROOT/<digit>/<n>.png) once; return its path. It draws each class's
    digits ``first`` to ``first + per_class - 1`` (so ``first=60`` gives rows disjoint from the default
    60 per class: an attacker's auxiliary sample)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    height, width = size
    folder = root / (f"digits-{height}x{width}-{per_class}" + (f"-from{first}-seed{seed}" if first else ""))
    if (folder / "done").exists():
        return folder
    rng = np.random.default_rng(seed)
    digits = load_digits()
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        rows = np.flatnonzero(digits.target == label)[first : first + per_class]
        if len(rows) < per_class:
            raise SystemExit(f"digit {label} has only {len(rows)} rows from row {first}: ask for fewer per class")
        for n, row in enumerate(rows):
            glyph = Image.fromarray((digits.images[row] / 16.0 * 255).astype(np.uint8)).resize((48, 48), Image.BICUBIC)
            glyph = glyph.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR)
            scale = rng.uniform(0.45, 0.8) * height / 48
            glyph = glyph.resize((max(4, round(48 * scale)),) * 2, Image.BILINEAR)
            canvas = np.full((height, width), rng.uniform(0.1, 0.35), np.float32)
            x0 = int(rng.integers(0, width - glyph.width + 1))
            y0 = int(rng.integers(0, height - glyph.height + 1))
            patch = np.asarray(glyph, np.float32) / 255.0
            region = canvas[y0 : y0 + glyph.height, x0 : x0 + glyph.width]
            canvas[y0 : y0 + glyph.height, x0 : x0 + glyph.width] = np.maximum(region, patch * rng.uniform(0.75, 1.0))
            canvas += rng.normal(0, 0.06, canvas.shape).astype(np.float32)
            image = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
            image.save(folder / str(label) / f"{n:03d}.png")
    (folder / "done").write_text("")
    return folder


def proxy_run(
    args: argparse.Namespace, data: Path, protocol: str, name: str, seed: int | None = None, **settings: object
):
    """One in-process run on the proxy, with the command line's clients and rounds (and seed, unless given)."""
    import splitfed

    return splitfed.run(
        protocol,
        clients=args.clients,
        epochs=args.epochs,
        data=str(data),
        seed=args.seed if seed is None else seed,
        in_process=True,
        out=args.out / "runs" / name,
        **settings,
    )


def configurations() -> list[tuple[str, dict]]:
    recipe: dict = {"augment": "none", "model": "cnn"}
    steps = [
        ("baseline", {}),
        ("+ augment", {"augment": "standard-noflip"}),
        ("+ schedule", {"schedule": "cosine", "warmup": 2}),
        ("+ smoothing", {"label_smoothing": 0.1}),
        ("+ model", {"model": "mobilenet"}),
    ]
    out = []
    for name, change in steps:
        recipe = {**recipe, **change}
        out.append((name, dict(recipe)))
    # not cumulative: the two pieces that helped, without the schedule and smoothing
    out.append(("augment + model only", {"augment": "standard-noflip", "model": steps[-1][1]["model"]}))
    return out


def applicable(protocol: str, settings: dict) -> dict:
    """What a protocol can take of the recipe: fedsl and pyvertical build their own networks."""
    if protocol in WHOLE_EXAMPLES:
        return settings
    return {k: v for k, v in settings.items() if k != "model"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--per-class", type=int, default=60, help="images per digit (10 classes)")
    parser.add_argument("--size", default="32x64", help="HEIGHTxWIDTH of the proxy images")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run only the configurations whose names contain this")
    parser.add_argument("--out", type=Path, default=Path("bench") / f"proxy-{time.strftime('%Y%m%d-%H%M%S')}")
    parser.add_argument("--models", default=None, help="compare these models (comma-separated) instead")
    parser.add_argument("--seeds", default=None, help="with --models or --variants: seeds to average over, e.g. 0,1")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="compare protocol settings instead, each 'PROTOCOL key=value,...' (e.g. 'fedsl encoder=conv')",
    )
    args = parser.parse_args()
    if args.models:
        compare_models(args)
        return
    if args.variants:
        compare_variants(args)
        return

    height, width = (int(v) for v in args.size.lower().split("x"))
    data = make_proxy(args.out.parent / "proxy-data", per_class=args.per_class, size=(height, width), seed=1234)
    results: dict[str, dict[str, dict]] = {}
    done: dict[tuple[str, str], dict] = {}
    for name, settings in configurations():
        if args.only and args.only not in name:
            continue
        for protocol in args.protocols.split(","):
            use = applicable(protocol, settings)
            key = (protocol, json.dumps(use, sort_keys=True))
            if key not in done:  # a configuration that adds nothing this protocol can take is the same run
                started = time.monotonic()
                result = proxy_run(args, data, protocol, f"{protocol}-{len(done):02d}", **use)
                rows = result.metrics
                done[key] = {
                    "test": result.test_accuracy,
                    "best": max(r["test_accuracy"] for r in rows),
                    "train": result.summary["train_accuracy"],
                    "seconds": time.monotonic() - started,
                }
                print(f"{name:12s} {protocol:11s} {done[key]}", flush=True)
            results.setdefault(name, {})[protocol] = done[key]
    protocols = args.protocols.split(",")
    lines = [
        f"Proxy: digits drawn into {height}x{width} canvases (random rotation, scale, shift, background, noise), "
        f"{args.per_class} per class, 80/20 random split, {args.clients} clients, {args.epochs} rounds, "
        f"seed {args.seed}. "
        "Final test accuracy (best round's in brackets).",
        "",
        "| configuration | " + " | ".join(protocols) + " |",
        "|---|" + "---|" * len(protocols),
    ]
    for name, by_protocol in results.items():
        cells = [f"{by_protocol[p]['test']:.3f} ({by_protocol[p]['best']:.3f})" for p in protocols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)
    print(f"total {sum(r['seconds'] for r in done.values()):.0f} s over {len(done)} runs")


def compare_models(args: argparse.Namespace) -> None:
    """Each model of ``--models`` with ``--augment standard-noflip``, per protocol and seed."""
    from splitfed.models import build_model

    height, width = (int(v) for v in args.size.lower().split("x"))
    data = make_proxy(args.out.parent / "proxy-data", per_class=args.per_class, size=(height, width), seed=1234)
    protocols = [p for p in args.protocols.split(",") if p in WHOLE_EXAMPLES]
    seeds = [int(s) for s in (args.seeds or str(args.seed)).split(",")]
    rows: list[dict] = []
    for model in args.models.split(","):
        params = sum(p.numel() for p in build_model(model, (1, height, width), 10, 0).parameters())
        for protocol in protocols:
            for seed in seeds:
                result = proxy_run(
                    args, data, protocol, f"{model}-{protocol}-{seed}", seed, model=model, augment="standard-noflip"
                )
                metrics = result.metrics
                row = {
                    "model": model,
                    "protocol": protocol,
                    "seed": seed,
                    "params": params,
                    "test": result.test_accuracy,
                    "best": max(r["test_accuracy"] for r in metrics),
                    "train": result.summary["train_accuracy"],
                    "s_per_round": result.summary["seconds_per_epoch"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = [
        f"Proxy: digits in {height}x{width} canvases, {args.per_class} per class, {args.clients} clients, "
        f"{args.epochs} rounds, --augment standard-noflip, seeds {seeds}. Mean final test accuracy "
        "(best round's in brackets), training accuracy, seconds per round.",
        "",
        "| model | params | " + " | ".join(protocols) + " | train (" + "/".join(protocols) + ") | s/round |",
        "|---|---|" + "---|" * (len(protocols) + 2),
    ]
    for model in args.models.split(","):
        mine = [r for r in rows if r["model"] == model]
        cells = []
        for protocol in protocols:
            of = [r for r in mine if r["protocol"] == protocol]
            cells.append(f"{np.mean([r['test'] for r in of]):.3f} ({np.mean([r['best'] for r in of]):.3f})")
        train = "/".join(f"{np.mean([r['train'] for r in mine if r['protocol'] == p]):.2f}" for p in protocols)
        speed = np.mean([r["s_per_round"] for r in mine])
        lines.append(
            f"| {model} | {mine[0]['params'] / 1e6:.2f} M | " + " | ".join(cells) + f" | {train} | {speed:.1f} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models.md").write_text(table + "\n")
    (args.out / "models.json").write_text(json.dumps(rows, indent=2))
    print(table)


def _setting(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def compare_variants(args: argparse.Namespace) -> None:
    """Each ``PROTOCOL key=value,...`` of ``--variants`` on the proxy, at ``--seed`` or each of ``--seeds``; a
    table of final and best test accuracy, and the mean over the last 10 rounds (one round's test pass on ~120
    rows moves by several points), each averaged over the seeds."""

    height, width = (int(v) for v in args.size.lower().split("x"))
    data = make_proxy(args.out.parent / "proxy-data", per_class=args.per_class, size=(height, width), seed=1234)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    lines = [
        f"Proxy: digits in {height}x{width} canvases, {args.per_class} per class, {args.clients} clients, "
        f"{args.epochs} rounds, seeds {', '.join(map(str, seeds))} (each row: the mean over them).",
        "",
        "| protocol | settings | test (best round's) | mean of the last 10 rounds | per seed: test | train | s/round |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, variant in enumerate(args.variants):
        protocol, _, rest = variant.partition(" ")
        settings = {k.replace("-", "_"): _setting(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}
        own = [int(settings.pop("seed"))] if "seed" in settings else seeds  # a variant's seed= wins
        runs = [proxy_run(args, data, protocol, f"{protocol}-{n:02d}-s{seed}", seed=seed, **settings) for seed in own]
        final = [r.test_accuracy for r in runs]
        best = [max(m["test_accuracy"] for m in r.metrics) for r in runs]
        last10 = [float(np.mean([m["test_accuracy"] for m in r.metrics[-10:]])) for r in runs]
        line = (
            f"| {protocol} | {rest or 'defaults'} | {np.mean(final):.3f} ({np.mean(best):.3f}) | {np.mean(last10):.3f} "
            f"| {' / '.join(f'{v:.3f}' for v in final)} "
            f"| {np.mean([r.summary['train_accuracy'] for r in runs]):.3f} "
            f"| {np.mean([r.summary['seconds_per_epoch'] for r in runs]):.1f} |"
        )
        print(line, flush=True)
        lines.append(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
