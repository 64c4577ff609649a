"""Privacy against utility and bytes, for the same runs: the README's privacy table.

Each setting trains SFLv1 (2 clients) on scikit-learn's digits upscaled to 32x32 (the first
RUN_ROWS rows), then attacks its trained client half. The attacker holds an auxiliary sample of
the same distribution: the remaining rows, disjoint from every row of the run. It trains a decoder
from the cut activations (after the client's clipping and noise, simulated afresh every batch)
back to the images, and rebuilds the run's held-out test images. Reported: test accuracy, MB on
the wire per round (both directions, all clients), the attack's SSIM and PSNR on the victims, and
the SSIM of the auxiliary mean image (what knowing nothing scores) and of the posterior mean over the
attacker's images (:func:`posterior_attack`: the decoder's training target, where more capacity and epochs lead).

    python benchmarks/privacy_table.py --out bench/privacy
    python benchmarks/privacy_table.py --capacity --only "cut 3, noise 0.02"   # would a stronger attacker do better?
    python benchmarks/privacy_table.py --epochs 6 --attack-epochs 15 --only "cut 1;labels client;labels client, cut 2"
    # is the attacker saturated? attack the trained run again (--reuse) with bigger decoders, 240 victims
    python benchmarks/privacy_table.py --epochs 30 --only "privacy strong" --reuse --victims 240 \
        --decoders "128x60;256x60;128x120" --out bench/privacy

``--data proxy`` runs the same measurement on the learning-quality proxy instead (README, "Learning quality
on a proxy": digits drawn into 32x64 canvases under rotation, scale, shift, background and noise, 60 per
class, ``benchmarks/proxy_quality.py make_proxy``), where the compact cnn falls well behind the default
mobilenet; the attacker's auxiliary images are drawn the same way from other digits (rows 60 onwards of
each class) with another seed, and the victims are the run's held-out test rows:

    python benchmarks/privacy_table.py --data proxy --epochs 40 --victims 120 --out bench/privacy-proxy \
        --only "default (mobilenet, cut 1);privacy strong;mobilenet-narrow, noise 0.18"
    python benchmarks/privacy_table.py --data proxy --size 64x128 ...     # the eye crops' size

Writes OUT/results.md, OUT/results.json, OUT/recon-<setting>.png (originals above reconstructions)
and OUT/reconstructions.png (all of them, one above the other).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
#: the runs use the digits' first RUN_ROWS rows; the attacker holds the rest (597 rows)
RUN_ROWS = 1200
SIZE = 32
#: ``--data proxy``: the runs' images are proxy_quality.py's (make_proxy's seed 1234, the first --per-class
#: digits of each class); the attacker's are the next --aux-per-class digits of each class, drawn with AUX_SEED
PROXY_SEED, AUX_SEED = 1234, 4321


def _upscaled(rows: slice) -> dict:
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[rows], dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1) * 2 - 1
    return {"x": x, "y": torch.tensor(digits.target[rows]), "classes": [str(c) for c in range(10)]}


def upscaled_digits() -> dict:
    """The runs' data: digits 0..RUN_ROWS-1, bicubically upscaled to 32x32, in [-1, 1]."""
    return _upscaled(slice(0, RUN_ROWS))


def attacker_digits() -> torch.Tensor:
    """The attacker's auxiliary images: the digits after RUN_ROWS, which no run trains or tests on."""
    return _upscaled(slice(RUN_ROWS, None))["x"]


def attacker_labels() -> torch.Tensor:
    """The labels of :func:`attacker_digits` (for the class-mean baseline)."""
    return _upscaled(slice(RUN_ROWS, None))["y"]


def mobilenet_normed_head(shape: tuple[int, int, int], n_classes: int) -> list:
    """``mobilenet`` whose head normalises its input (a LayerNorm after the pool): a lead, not a built-in. Clipped
    to norm 1 and noised, the cut-4 activations reach the server's linear layer tiny, and it learns slowly from
    them; the LayerNorm puts them back on a unit scale (the server can do that: it is its own half)."""
    from torch import nn

    from splitfed.models.mobilenet import mobilenet_blocks

    *blocks, (name, head) = mobilenet_blocks(shape, n_classes)
    pool, flat, linear = list(head)
    return [*blocks, (name, nn.Sequential(pool, flat, nn.LayerNorm(linear.in_features), linear))]


#: name -> settings of splitfed.run; the table's rows
SETTINGS: dict[str, dict] = {
    "cut 1": {"cut": 1},
    "cut 2": {"cut": 2},
    "cut 3": {"cut": 3},
    "cut 1, int8": {"cut": 1, "wire_compress": "int8"},
    "cut 1, noise 0.01": {"cut": 1, "dp_clip": 1.0, "dp_noise": 0.01},
    "cut 1, noise 0.05": {"cut": 1, "dp_clip": 1.0, "dp_noise": 0.05},
    "cut 1, noise 0.2": {"cut": 1, "dp_clip": 1.0, "dp_noise": 0.2},
    "cut 3, noise 0.02": {"cut": 3, "dp_clip": 1.0, "dp_noise": 0.02},
    "cut 3, noise 0.03": {"cut": 3, "dp_clip": 1.0, "dp_noise": 0.03},
    "cut 3, noise 0.04": {"cut": 3, "dp_clip": 1.0, "dp_noise": 0.04},
    "cut 1, nopeek 0.5": {"cut": 1, "nopeek": 0.5},
    "cut 1, nopeek 2": {"cut": 1, "nopeek": 2.0},
    "privacy strong": {"privacy": "strong"},
    **{
        f"mobilenet-private, noise {sigma}": {"model": "mobilenet-private", "dp_clip": 1.0, "dp_noise": sigma}
        for sigma in (0.05, 0.1, 0.15, 0.2)
    },
    "mobilenet-private, no defence": {"model": "mobilenet-private"},
    **{
        f"narrow cut 3, noise {sigma}": {"model": "cnn-narrow", "cut": 3, "dp_clip": 1.0, "dp_noise": sigma}
        for sigma in (0.12, 0.15, 0.17, 0.18, 0.19, 0.2, 0.25, 0.3)
    },
    **{
        f"mobilenet-narrow, noise {sigma}": {"model": "mobilenet-narrow", "dp_clip": 1.0, "dp_noise": sigma}
        for sigma in (0.02, 0.05, 0.1, 0.12, 0.15, 0.18, 0.2, 0.25, 0.3)
    },
    "mobilenet, cut 4": {"model": "mobilenet", "cut": 4},
    "mobilenet-narrow, int8": {"model": "mobilenet-narrow", "wire_compress": "int8"},
    **{
        f"mobilenet + LayerNorm head, cut 4, noise {sigma}": {
            "model": f"{Path(__file__).resolve()}:mobilenet_normed_head",
            "cut": 4,
            "dp_clip": 1.0,
            "dp_noise": sigma,
        }
        for sigma in (0.05, 0.1)
    },
    **{
        f"mobilenet, cut 4, noise {sigma}": {"model": "mobilenet", "cut": 4, "dp_clip": 1.0, "dp_noise": sigma}
        for sigma in (0.02, 0.05, 0.1, 0.2)
    },
    "labels client": {"cut": 1, "labels": "client"},
    "labels client, cut 2": {"cut": 2, "labels": "client"},
    "labels client, 2 head blocks": {"cut": 1, "labels": "client", "head_blocks": 2},
    "labels client, cut 2, noise 0.02, int8": {
        "cut": 2,
        "labels": "client",
        "dp_clip": 1.0,
        "dp_noise": 0.02,
        "wire_compress": "int8",
    },
}


#: ``--data proxy``: its rows (the first is the default unprotected run: what the issue's 3 points are from)
PROXY_SETTINGS: dict[str, dict] = {
    "default (mobilenet, cut 1)": {"model": "auto", "cut": 1},
    "privacy strong": {"privacy": "strong"},
    "the previous preset (narrow cut 3, noise 0.18)": SETTINGS["narrow cut 3, noise 0.18"],
    **{k: v for k, v in SETTINGS.items() if k.startswith("mobilenet")},
}


def proxy_data(args: argparse.Namespace) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(the runs' proxy folder, the attacker's images and labels): make_proxy's folders, written once."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from proxy_quality import make_proxy

    from splitfed.data.datasets import load_index

    size = tuple(int(v) for v in args.size.lower().split("x"))
    root = args.out.resolve().parent / "proxy-data"
    runs = make_proxy(root, per_class=args.per_class, size=size, seed=PROXY_SEED)
    aux = make_proxy(root, per_class=args.aux_per_class, size=size, seed=AUX_SEED, first=args.per_class)
    index = load_index(str(aux))
    aux_x, aux_y = index.load(range(len(index.labels)))
    return str(runs), aux_x, aux_y


def class_mean_ssim(run: Path, aux_x: torch.Tensor, aux_y: torch.Tensor, victims: int) -> float:
    """SSIM of the mean of the attacker's images of each victim's true class: what knowing the label alone
    scores (the activations must carry the class, or the server could not classify)."""
    from splitfed.attack import image_scores
    from splitfed.config import RunConfig
    from splitfed.data.shards import client_shard

    config = RunConfig.from_file(run / "config.json")
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    victim_x, victim_y = shard.test_x[:victims], shard.test_y[:victims]
    means = torch.stack([aux_x[aux_y == c].mean(0) for c in range(len(shard.classes))])
    return image_scores(victim_x, means[victim_y])[0]


def _client_side(run: Path, victims: int):
    """(the run's trained client half, its defence, the victims' images: its first held-out test rows)."""
    from splitfed.protocols.defences import Defence

    from splitfed.config import RunConfig
    from splitfed.data.shards import client_shard
    from splitfed.models import build_model, split_model

    config = RunConfig.from_file(run / "config.json")
    facts = json.loads((run / "config.json").read_text())
    shard = client_shard(config.data, clients=1, client=0, seed=config.seed)
    full = build_model(config.model, shard.shape, len(shard.classes), config.seed)
    half = split_model(full, facts["cut"])[0]
    state = torch.load(run / "checkpoint.pt", weights_only=True)["client_half"]  # --labels client: front and head
    half.load_state_dict({k: v for k, v in state.items() if k in half.state_dict()})
    return half, Defence.of(config), shard.test_x[:victims]


def attack_run(
    run: Path,
    aux_x: torch.Tensor,
    victims: int,
    width: int,
    epochs: int,
    seed: int,
    depth: int = 0,
    lr: float = 2e-3,
    sends: int = 1,
):
    """The reconstruction attack on a finished run's client half and held-out test rows (``sends`` > 1: the
    attacker averages that many noisy sends of each victim, and trains on such averages)."""
    from splitfed.attack import linked, reconstruct

    half, defence, victim_x = _client_side(run, victims)
    release = linked(defence.release, sends) if defence.clip or defence.noise else None
    decoder = {"width": width, "depth": depth, "epochs": epochs, "lr": lr}
    return reconstruct(half, aux_x, victim_x, release=release, seed=seed, **decoder)


def posterior_attack(run: Path, aux_x: torch.Tensor, victims: int, seed: int, sends: int = 1) -> tuple[float, float]:
    """(SSIM, PSNR) of the posterior mean over the attacker's own images: each victim's guess is the mean of
    the auxiliary images weighted by how likely each one's clipped activations make what the wire showed
    under the run's Gaussian noise. It is the MSE-optimal decoder for the decoder's own training data (the
    auxiliary rows with fresh noise), i.e. where more capacity and epochs of that training lead, without
    the decoder's ability to generalise beyond the auxiliary images. The victims' noise is the decoder
    attack's (the same seed)."""
    from splitfed.protocols.defences import Defence

    from splitfed.attack import image_scores, linked, smashed

    half, defence, victim_x = _client_side(run, victims)
    clip = Defence(clip=defence.clip).release if defence.clip else (lambda acts, _: acts)
    known = clip(smashed(half, aux_x), None).flatten(1)
    seen = smashed(half, victim_x)
    if defence.clip or defence.noise:
        seen = linked(defence.release, sends)(seen, torch.Generator().manual_seed(seed + 1))
    std = max(defence.noise * defence.clip / sends**0.5, 1e-6)
    weights = torch.softmax(-(torch.cdist(seen.flatten(1).double(), known.double()) ** 2) / (2 * std**2), dim=1)
    guesses = (weights @ aux_x.flatten(1).double()).float().reshape(victim_x.shape)
    return image_scores(victim_x, guesses)


def label_attack(run: Path, seed: int) -> dict:
    """The label attack's accuracy at the first round and at the checkpoint (1: the labels were sent)."""
    from splitfed.attack_run import label_attack_run

    report = label_attack_run(run, victims=256, seed=seed)
    if report["labels"] != "client":
        return {"label_attack_first": 1.0, "label_attack_last": 1.0}
    return {
        "label_attack_first": report["first_round"]["accuracy"],
        "label_attack_last": report["checkpoint"]["accuracy"],
        "label_attack_shuffled": max(report["first_round"]["shuffled"], report["checkpoint"]["shuffled"]),
    }


def train_run(name: str, settings: dict, data: str, args: argparse.Namespace) -> dict:
    import splitfed

    started = time.monotonic()
    out = args.out / "runs" / name.replace(" ", "").replace(",", "-")
    if args.reuse and (out / "summary.json").exists() and (out / "checkpoint.pt").exists():
        return reused_run(out, args.epochs)
    result = splitfed.run(
        "sflv1",
        clients=2,
        epochs=args.epochs,
        data=data,
        seed=args.seed,
        in_process=True,
        out=out,
        **({} if "privacy" in settings or "model" in settings else {"model": args.model}),
        **settings,  # a preset (or the setting) names its own model
    )
    s = result.summary
    return {
        "run": str(out),
        "test_accuracy": result.test_accuracy,
        "best_test_accuracy": max(r["test_accuracy"] for r in result.metrics),
        "mb_per_round": (s["bytes_sent"] + s["bytes_received"]) / args.epochs / 1e6,
        "train_seconds": time.monotonic() - started,
    }


def reused_run(out: Path, epochs: int) -> dict:
    """A run trained earlier (``--reuse``): its figures from its own files, so it can be attacked again."""
    from splitfed.api import RunResult

    trained = json.loads((out / "config.json").read_text()).get("epochs")
    if trained != epochs:
        raise SystemExit(f"{out} was trained for {trained} rounds, not --epochs {epochs}: pass --epochs {trained}")
    result = RunResult.load(out)
    s = result.summary
    return {
        "run": str(out),
        "test_accuracy": result.test_accuracy,
        "best_test_accuracy": max(r["test_accuracy"] for r in result.metrics),
        "mb_per_round": (s["bytes_sent"] + s["bytes_received"]) / epochs / 1e6,
        "train_seconds": None,
        "reused": True,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="training rounds per run")
    parser.add_argument("--model", default="cnn", help="the split model (the table was measured with cnn)")
    parser.add_argument("--victims", type=int, default=64, help="held-out test images the attacker rebuilds")
    parser.add_argument("--width", type=int, default=32, help="decoder channels")
    parser.add_argument("--attack-epochs", type=int, default=20, help="the decoder's training epochs")
    parser.add_argument("--depth", type=int, default=0, help="extra 3x3 convolutions per decoder resolution")
    parser.add_argument("--lr", type=float, default=2e-3, help="the decoder's peak learning rate (cosine down to 0)")
    parser.add_argument(
        "--decoders",
        default=None,
        help="attack each setting with these decoders instead: WIDTHxEPOCHS[xDEPTH] separated by ';' "
        "(e.g. '128x60;256x60;128x120;64x60x2'), one row each",
    )
    parser.add_argument("--only", default=None, help="run only these settings (names separated by ';')")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="attack the first setting with half and twice --width, and twice --attack-epochs: does more help?",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="attack a setting's trained run in OUT/runs/ again instead of retraining it, where it has one",
    )
    parser.add_argument(
        "--sends",
        type=int,
        default=1,
        help="the attacker averages this many noisy sends of each victim (the test pass sends every held-out "
        "row each round, in the same order), and trains its decoder on such averages (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        choices=("digits", "proxy"),
        default="digits",
        help="digits: the 8x8 digits upscaled to 32x32 (the README's tables); proxy: proxy_quality.py's harder "
        "digits in wide canvases, with the default recipe's model as the unprotected row (default %(default)s)",
    )
    parser.add_argument("--size", default="32x64", help="--data proxy: HEIGHTxWIDTH of the images")
    parser.add_argument("--per-class", type=int, default=60, help="--data proxy: the runs' images per class")
    parser.add_argument(
        "--aux-per-class", type=int, default=100, help="--data proxy: the attacker's images per class (other digits)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench") / "privacy")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from splitfed.attack import image_scores, save_figure

    settings = SETTINGS if args.data == "digits" else PROXY_SETTINGS
    if args.data == "digits":
        data = f"{Path(__file__).resolve()}:upscaled_digits"
        aux_x, aux_y = attacker_digits(), attacker_labels()
    else:
        data, aux_x, aux_y = proxy_data(args)
    names = [n for n in settings if not args.only or n in args.only.split(";")]
    unknown = set(args.only.split(";")) - set(settings) if args.only else set()
    if unknown:
        raise SystemExit(f"--only: no setting {sorted(unknown)} for --data {args.data}; they are {list(settings)}")
    if args.capacity:
        names = names[:1]
    results = {}
    for name in names:
        row = train_run(name, settings[name], data, args)
        trials = [(args.width, args.attack_epochs, args.depth)]
        if args.capacity:
            wide, long = (args.width * 2, args.attack_epochs), (args.width, 2 * args.attack_epochs)
            trials = [(args.width // 2, args.attack_epochs, args.depth), trials[0]]
            trials += [(*wide, args.depth), (*long, args.depth)]
        if args.decoders:
            trials = [_decoder(spec, args.depth) for spec in args.decoders.split(";")]
        posterior = posterior_attack(Path(row["run"]), aux_x, args.victims, args.seed, args.sends)
        class_means = class_mean_ssim(Path(row["run"]), aux_x, aux_y, args.victims)
        print(f"{name}: the posterior mean over the attacker's images scores SSIM {posterior[0]:.3f}", flush=True)
        for width, epochs, depth in trials:
            started = time.monotonic()
            decoder = {"depth": depth, "lr": args.lr, "sends": args.sends}
            attack = attack_run(Path(row["run"]), aux_x, args.victims, width, epochs, args.seed, **decoder)
            key = name
            if args.capacity or args.decoders:
                key = f"{name}, decoder {width} x {epochs} epochs" + (f", depth {depth}" if depth else "")
            if args.sends > 1:
                key += f", {args.sends} sends averaged"
            results[key] = {
                "decoder": {"width": width, "epochs": epochs, **decoder},
                **row,
                **label_attack(Path(row["run"]), args.seed),
                "ssim": attack.ssim,
                "psnr": attack.psnr,
                "ssim_first_64": image_scores(attack.originals[:64], attack.reconstructions[:64])[0],
                "posterior_mean_ssim": posterior[0],
                "mean_image_ssim": attack.baseline_ssim,
                "class_mean_ssim": class_means,
                "decoder_train_mse": attack.train_mse,
                "attack_seconds": time.monotonic() - started,
            }
            save_figure(attack, args.out / f"recon-{key.replace(' ', '').replace(',', '-')}.png", title=key)
            print(key, json.dumps({k: v for k, v in results[key].items() if k != "run"}), flush=True)
    write_table(results, args)
    figures = [args.out / f"recon-{k.replace(' ', '').replace(',', '-')}.png" for k in results]
    stack_figures(figures, args.out / "reconstructions.png")


def _decoder(spec: str, depth: int) -> tuple[int, int, int]:
    """'WIDTHxEPOCHS' or 'WIDTHxEPOCHSxDEPTH' (--decoders) as (width, epochs, depth)."""
    parts = spec.strip().lower().split("x")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise SystemExit(f"--decoders: {spec!r} is not WIDTHxEPOCHS or WIDTHxEPOCHSxDEPTH (e.g. 128x60 or 64x60x2)")
    return int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else depth


def stack_figures(paths: list[Path], out: Path) -> None:
    """The per-setting figures one above the other, in one PNG (the README's figure)."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths if p.exists()]
    if not images:
        return
    width = max(im.width for im in images)
    sheet = Image.new("RGB", (width, sum(im.height for im in images)), "white")
    top = 0
    for im in images:
        sheet.paste(im, (0, top))
        top += im.height
    sheet.save(out)


def _decoders(args: argparse.Namespace) -> str:
    if args.decoders:
        return f"the decoders named in each row (learning rate {args.lr})"
    return f"decoder width {args.width}, depth {args.depth}, {args.attack_epochs} epochs, learning rate {args.lr}"


def write_table(results: dict, args: argparse.Namespace) -> None:
    if args.data == "digits":
        data = f"digits upscaled to 32x32 ({RUN_ROWS} rows, 80/20 split, seed {args.seed}); attacker: the other "
        data += f"{1797 - RUN_ROWS} rows"
    else:
        data = (
            f"the proxy ({args.size}, {args.per_class} per class, 80/20 split, seed {args.seed}, --augment auto); "
            f"attacker: {args.aux_per_class} other digits per class drawn the same way"
        )
    lines = [
        f"SFLv1, 2 clients, {args.epochs} rounds on {data}, {_decoders(args)}, rebuilding "
        f"{args.victims} held-out test images" + (f", {args.sends} sends of each averaged." if args.sends > 1 else "."),
        "",
        "| setting | test accuracy (best round) | MB per round | posterior-mean SSIM | decoder SSIM | PSNR (dB) "
        "| mean-image SSIM | class-mean SSIM | label attack (first / last round; chance 0.1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        labels = "1 (labels sent)"
        if "label_attack_shuffled" in r:
            labels = f"{r['label_attack_first']:.3f} / {r['label_attack_last']:.3f}"
        lines.append(
            f"| {name} | {r['test_accuracy']:.3f} ({r['best_test_accuracy']:.3f}) | {r['mb_per_round']:.2f} "
            f"| {r['posterior_mean_ssim']:.3f} | {r['ssim']:.3f} | {r['psnr']:.1f} | {r['mean_image_ssim']:.3f} "
            f"| {r['class_mean_ssim']:.3f} | {labels} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table)


if __name__ == "__main__":
    main()
