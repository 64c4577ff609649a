"""Plots for people who would rather look than read. Written atomically as PNG."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def new_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    from splitfed.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    new_figure().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def round_axis(ax: Any) -> None:
    """Rounds are whole numbers: no tick at round 2.5."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def run_title(config: dict[str, Any], when: str | None = None) -> str:
    """``sflv1, 2 clients, data digits, 2026-11-29 16:40``: what a run's figures show."""
    import time

    clients = "" if config.get("protocol") == "centralized" else f", {config.get('clients')} clients"
    stamp = when or time.strftime("%Y-%m-%d %H:%M")
    return f"{config.get('protocol')}{clients}, data {config.get('data')}, {stamp}"


def plot_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per round, train and test (markers, so a single round still shows)."""
    plt = new_figure()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    x = [r["round"] for r in rows]
    for key, style in (("train", "--o"), ("test", "-s")):
        ax_loss.plot(x, [r.get(f"{key}_loss") for r in rows], style, markersize=3, label=key)
        ax_acc.plot(x, [r.get(f"{key}_accuracy") for r in rows], style, markersize=3, label=key)
    ax_loss.set(xlabel="round", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="round", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        round_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: Path, title: str = "test confusion") -> None:
    """Counts in the cells, coloured by the share of each true class (the colour bar), class names on the axes."""
    plt = new_figure()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(confusion[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    save_figure(fig, path)
