"""``splitfed bench``: every protocol on the same data, model, epochs and seeds, side by side.

Each run is a real multi-process ``splitfed run`` (run one after another, so they do not
compete for the cores). Every run's parties fork from one zygote (:mod:`splitfed.runtime.zygote`),
started once for the whole bench, so torch is imported once, not three times per run; each party
is still a fresh process of its own, so the results are those of separate commands. A failed
run is reported in the table with its error; the others still finish. Progress (one line as
each run starts and ends) goes to this module's logger, which the CLI shows on stderr. The folder it writes:

* ``results.csv``, ``results.md``: one row per protocol, means ± std over the seeds;
* ``curves.png``: test accuracy and loss per round, one line per protocol;
* ``confusion_<protocol>.png``: from the first seed's run;
* ``runs/<protocol>-seed<N>/``: every run folder, so any row can be traced.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitfed.errors import SplitFedError
from splitfed.files import atomic_write_bytes

log = logging.getLogger(__name__)

COLUMNS = [
    "protocol",
    "runs_ok",
    "test_accuracy",
    "test_accuracy_std",
    "test_macro_f1",
    "test_macro_f1_std",
    "test_loss",
    "test_loss_std",
    "train_accuracy",
    "seconds_per_epoch",
    "mb_up_per_epoch",
    "mb_down_per_epoch",
    "peak_memory_mb",
    "error",
]


@dataclass
class BenchRun:
    protocol: str
    seed: int
    folder: Path
    summary: dict[str, Any] | None = None
    error: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def flags_for(protocol: str, common: list[str]) -> list[str]:
    """``common`` (flag, value pairs) less the flags ``protocol`` does not list (centralized has no --clients,
    FedSL and PyVertical no --model)."""
    from splitfed.cli_parser import protocol_flags

    known = protocol_flags(protocol)
    pairs = zip(common[::2], common[1::2], strict=True)
    return [item for flag, value in pairs if flag in known for item in (flag, value)]


def run_one(protocol: str, seed: int, folder: Path, common: list[str], timeout: float) -> BenchRun:
    """One ``splitfed run``: its parties forked from this bench's one zygote, or (no zygote) a new command."""
    from splitfed.runtime.zygote import use_zygote

    run = BenchRun(protocol, seed, folder)
    argv = ["run", protocol, *flags_for(protocol, common), "--seed", str(seed), "--out", str(folder), "--quiet"]
    run.error = (_in_zygote if use_zygote() else _in_process)(argv, timeout)
    if run.error:
        return run
    run.summary = json.loads((folder / "summary.json").read_text())
    run.rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return run


def _in_zygote(argv: list[str], timeout: float) -> str:
    """Check and launch ``splitfed ARGV`` from the zygote every run of the bench shares; the error, or ""."""
    from splitfed.cli_run import execute, plan_via_zygote

    try:
        code, plan = plan_via_zygote(argv)
        if plan is None:
            return f"exit status {code}"
        execute(plan, timeout=timeout)
    except SplitFedError as exc:
        return f"error: {exc}"[:300]
    return ""


def _in_process(argv: list[str], timeout: float) -> str:
    """Run ``splitfed ARGV`` as a command of its own; the first ``error:`` line it printed, or ""."""
    try:
        res = subprocess.run([sys.executable, "-m", "splitfed", *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:g} s"
    if res.returncode == 0:
        return ""
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors[0] if errors else (lines[-1] if lines else f"exit status {res.returncode}"))[:300]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(protocol: str, runs: list[BenchRun]) -> dict[str, Any]:
    ok = [r for r in runs if r.summary is not None]
    row: dict[str, Any] = {
        "protocol": protocol,
        "runs_ok": f"{len(ok)}/{len(runs)}",
        "error": "; ".join(sorted({r.error for r in runs if r.error})),
    }
    for key in ("test_accuracy", "test_macro_f1", "test_loss"):
        row[key], row[f"{key}_std"] = _mean_std([r.summary[key] for r in ok])
    row["train_accuracy"] = _mean_std([r.summary["train_accuracy"] for r in ok])[0]
    # seconds per round as summary.json defines it (older summaries call it seconds_per_epoch)
    row["seconds_per_epoch"] = _mean_std(
        [r.summary.get("seconds_per_round", r.summary["seconds_per_epoch"]) for r in ok]
    )[0]
    row["mb_up_per_epoch"] = _mean_std([r.summary["bytes_sent"] / r.summary["epochs"] / 1e6 for r in ok])[0]
    row["mb_down_per_epoch"] = _mean_std([r.summary["bytes_received"] / r.summary["epochs"] / 1e6 for r in ok])[0]
    row["peak_memory_mb"] = max((r.summary.get("peak_memory_mb", 0.0) for r in ok), default=None)
    return row


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pm(row: dict[str, Any], key: str) -> str:
    """``mean ± std`` over several runs; one run has no spread to show, so no ``± 0.0000``."""
    ok = int(str(row["runs_ok"]).split("/")[0])
    return f"{row[key]:.4f}" + (f" ± {row[f'{key}_std']:.4f}" if ok > 1 else "")


def bench_settings(common: list[str], seeds: list[int]) -> dict[str, Any]:
    """What every run of a bench shared (its flags), the seeds, the date and the splitfed version."""
    from splitfed.versions import versions

    flags = {common[i].lstrip("-"): common[i + 1] for i in range(0, len(common) - 1, 2) if common[i].startswith("--")}
    found = versions()
    return {
        **flags,
        "seeds": " ".join(str(s) for s in seeds),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "splitfed": found["splitfed"] + (f" ({found['git_commit'][:12]})" if found["git_commit"] else ""),
    }


def write_tables(rows: list[dict[str, Any]], out: Path, settings: dict[str, Any] | None = None) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "results.csv", buf.getvalue().encode())
    head = ["Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), ""] if settings else []
    lines = [
        *head,
        "| protocol | test accuracy | macro-F1 | log loss | train accuracy | s/round | MB up/round | MB down/round "
        "| peak MB | runs ok |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["test_accuracy"] is None:
            lines.append(f"| {r['protocol']} | failed: {r['error']} | | | | | | | | {r['runs_ok']} |")
            continue
        lines.append(
            f"| {r['protocol']} | {_pm(r, 'test_accuracy')} | {_pm(r, 'test_macro_f1')} | {_pm(r, 'test_loss')} "
            f"| {_fmt(r['train_accuracy'])} | {_fmt(r['seconds_per_epoch'], 3)} | {_fmt(r['mb_up_per_epoch'], 2)} "
            f"| {_fmt(r['mb_down_per_epoch'], 2)} | {_fmt(r['peak_memory_mb'], 0)} | {r['runs_ok']} |"
        )
    atomic_write_bytes(out / "results.md", ("\n".join(lines) + "\n").encode())


def plot_comparison(all_runs: dict[str, list[BenchRun]], out: Path) -> None:
    from splitfed.plots import new_figure, save_figure

    plt = new_figure()
    from splitfed.plots import round_axis

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    markers = "osD^v<>pX*"
    for k, (protocol, runs) in enumerate(all_runs.items()):
        ok = [r for r in runs if r.rows]
        if not ok:
            continue
        n = min(len(r.rows) for r in ok)
        x = list(range(1, n + 1))
        # a marker and dash of its own: identical curves (sflv1 and fedavg can be) stay visible, drawn over each other
        style = {"marker": markers[k % len(markers)], "markersize": 7 - k % 4, "linestyle": "-" if k % 2 else "--"}
        ax_acc.plot(
            x, [statistics.fmean(r.rows[i]["test_accuracy"] for r in ok) for i in range(n)], **style, label=protocol
        )
        ax_loss.plot(
            x, [statistics.fmean(r.rows[i]["test_loss"] for r in ok) for i in range(n)], **style, label=protocol
        )
    several = max((len(runs) for runs in all_runs.values()), default=0) > 1
    note = " (mean over seeds)" if several else ""
    ax_acc.set(xlabel="round", ylabel="test accuracy", title=f"test accuracy{note}")
    ax_loss.set(xlabel="round", ylabel="test cross-entropy", title=f"test loss{note}")
    for ax in (ax_acc, ax_loss):
        round_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out / "curves.png")


def bench(protocols: list[str], common: list[str], seeds: list[int], out: Path, timeout: float = 3600) -> list[dict]:
    """Run every protocol for every seed; write the tables and plots; return the table rows."""
    out.mkdir(parents=True, exist_ok=True)
    total, k = len(protocols) * len(seeds), 0
    all_runs: dict[str, list[BenchRun]] = {}
    for protocol in protocols:
        for seed in seeds:
            k += 1
            log.info("[%d/%d] %s seed %s ...", k, total, protocol, seed)
            t0 = time.monotonic()
            run = run_one(protocol, seed, out / "runs" / f"{protocol}-seed{seed}", common, timeout)
            all_runs.setdefault(protocol, []).append(run)
            took = time.monotonic() - t0
            result = run.error or f"test accuracy {run.summary['test_accuracy']:.4f}"
            log.info("[%d/%d] %s seed %s: %s (%.0f s)", k, total, protocol, seed, result, took)
    rows = [aggregate(p, runs) for p, runs in all_runs.items()]
    write_tables(rows, out, bench_settings(common, seeds))
    plot_comparison(all_runs, out)
    for protocol, runs in all_runs.items():
        first = next((r for r in runs if (r.folder / "confusion.png").exists()), None)
        if first is not None:
            shutil.copyfile(first.folder / "confusion.png", out / f"confusion_{protocol}.png")
    return rows
