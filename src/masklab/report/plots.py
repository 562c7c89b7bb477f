"""PNG plots of an evaluation: per-class bars, confusion heatmap, training curves (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def per_class_bars(per_class: pd.DataFrame, path: Path, columns: Sequence[str] = ("IoU", "BoundaryIoU")) -> Path:
    """Grouped bars: one group per class, one bar per metric column present (values 0..1)."""
    plt = _pyplot()
    cols = [c for c in columns if c in per_class.columns]
    names = list(per_class["class"])
    x = np.arange(len(names))
    width = 0.8 / max(len(cols), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.6))
    for i, col in enumerate(cols):
        values = per_class[col].to_numpy(dtype=float)
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, np.nan_to_num(values), width, label=col)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Per-class scores")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def confusion_heatmap(normalised: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (rows = ground truth) as a heatmap with the values written in."""
    plt = _pyplot()
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.7 * n + 2), max(3.0, 0.6 * n + 1.5)))
    im = ax.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for a in range(n):
        for b in range(n):
            ax.text(b, a, f"{normalised[a, b]:.2f}", ha="center", va="center",
                    color="white" if normalised[a, b] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("Confusion (row-normalised)")
    return _save(fig, path)


def training_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Loss curves on the left, score curves on the right; x = training step."""
    plt = _pyplot()
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, points in history.items():
        if not points:
            continue
        steps, values = zip(*points)
        (ax_loss if "loss" in name else ax_score).plot(steps, values, marker=".", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_score, "scores")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves_plot(curves: pd.DataFrame, x: str, metric: str, path: Path, title: str = "") -> Path:
    """One line per strategy of ``curves`` (masklab.active.curves.learning_curves: strategy, round, images,
    pixels, mean, std, n): the mean ``metric`` against labelled ``x`` ("images" or "pixels"), with a ± std band
    over seeds; random dashed in black, as the baseline every other line is read against."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    strategies = sorted(curves["strategy"].unique(), key=lambda s: (s != "random", s))
    colours = plt.get_cmap("tab10")
    for i, strategy in enumerate(strategies):
        c = curves[curves["strategy"] == strategy].sort_values("round")
        xs = c[x].to_numpy(float) / (1e6 if x == "pixels" else 1)
        mean, std = c["mean"].to_numpy(float), np.nan_to_num(c["std"].to_numpy(float))
        style = {"color": "black", "linestyle": "--"} if strategy == "random" else {"color": colours(i % 10)}
        ax.plot(xs, mean, marker="o", markersize=3, label=f"{strategy} (n={int(c['n'].min())})", **style)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=style["color"], linewidth=0)
    ax.set_xlabel("labelled images" if x == "images" else "labelled pixels (millions, original size)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title or f"Test {metric} against labelled {x} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
