"""The report's figures as PNG files (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from storage.catalog import COUNTERS, KEY_COLUMNS
from tasks.report.numbers import COVERAGE_BINS, DatasetReport

DPI = 100


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def quality_figure(r: DatasetReport, path: Path) -> Path:
    """Each counter per `per_frames` frames over episodes, kept vs rejected, limit drawn."""
    fig, axes = plt.subplots(2, 4, figsize=(14, 6))
    q = r.quality
    scale = (r.per_frames / q.n_frames) if r.per_frames else np.ones(len(q))
    for ax, c in zip(axes.flat, COUNTERS, strict=False):
        v = (q[c].fillna(0) * scale).astype(float)  # nullable counters: pd.NA is not a float
        top = float(v.max()) if len(v) else 0.0  # a dataset whose every episode failed
        bins = np.linspace(0, max(top, r.thresholds.get(c, 0), 1) * 1.05, 30)
        ax.hist(
            [v[q.keep], v[~q.keep]],
            bins=bins,
            stacked=True,
            color=["#2a9d8f", "#e76f51"],
            label=["kept", "rejected"],
        )
        if c in r.thresholds:
            ax.axvline(r.thresholds[c], color="black", ls="--", lw=1.5, label="limit")
        unit = f" per {r.per_frames} frames" if r.per_frames else ""
        ax.set_title(f"{c}{unit}", fontsize=10)
        ax.set_ylabel("episodes")
    axes.flat[-1].axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{r.label}: quality counters of {len(q)} episodes")
    return _save(fig, path)


def actions_figure(r: DatasetReport, path: Path) -> Path:
    """Key and click press rates per catalog dataset."""
    cols = [*KEY_COLUMNS, "lclick", "rclick"]
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / max(len(r.actions), 1)
    x = np.arange(len(cols))
    for i, row in enumerate(r.actions.itertuples(index=False)):
        ax.bar(x + i * width, [getattr(row, c) for c in cols], width, label=row.dataset)
    ax.set_xticks(x + width * (len(r.actions) - 1) / 2, [c.removeprefix("key_") for c in cols])
    ax.set_ylabel("share of frames pressed")
    ax.set_title(f"{r.label}: key and click rates")
    ax.legend(fontsize=8)
    return _save(fig, path)


def mouse_figure(r: DatasetReport, path: Path) -> Path:
    """Histograms of the mouse x and y bins (log scale: the zero bin dominates)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, (name, h) in zip(axes, (("mouse x", r.mouse_x), ("mouse y", r.mouse_y)), strict=True):
        bins = sorted(h.bin.unique())
        pos = {b: i for i, b in enumerate(bins)}
        datasets = list(h.dataset.unique())
        width = 0.8 / max(len(datasets), 1)
        for i, (d, g) in enumerate(h.groupby("dataset", sort=False)):
            ax.bar([pos[b] + i * width for b in g.bin], g.share, width, label=d)
        ax.set_xticks(range(len(bins)), [f"{b:g}" for b in bins], rotation=90, fontsize=7)
        ax.set_yscale("log")
        ax.set_title(f"{name} bins")
        ax.set_ylabel("share of frames")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def weapons_figure(r: DatasetReport, path: Path, top: int = 10) -> Path:
    """The most held weapons per catalog dataset."""
    datasets = list(r.weapons.dataset.unique())
    fig, axes = plt.subplots(
        1, max(len(datasets), 1), figsize=(5 * max(len(datasets), 1), 4), squeeze=False
    )
    for ax, d in zip(axes[0], datasets, strict=False):
        g = r.weapons[r.weapons.dataset == d].head(top)[::-1]
        ax.barh([w.removeprefix("weapon_") for w in g.weapon], g.share, color="#457b9d")
        ax.set_title(d, fontsize=10)
        ax.set_xlabel("share of frames")
    return _save(fig, path)


def coverage_figure(label: str, xy: np.ndarray, path: Path) -> Path:
    """Where the player was: a 60x60 position heatmap on a log colour scale, as the seed's."""
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(xy):
        ax.hist2d(xy[:, 0], xy[:, 1], bins=COVERAGE_BINS, cmap="jet", norm=LogNorm())
    ax.set_title(f"{label} ({len(xy)} frames)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return _save(fig, path)


def metrics_figure(
    names: list[str], metrics: list[dict[str, float]], keys: list[str], path: Path
) -> Path:
    """Grouped bars of the seed's accuracies, one group per metric, one bar per model."""
    fig, ax = plt.subplots(figsize=(11, 3.8))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(keys))
    for i, (name, m) in enumerate(zip(names, metrics, strict=True)):
        ax.bar(x + i * width, [m[k] for k in keys], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, keys, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_figure(
    name: str, confusion: dict[str, list[list[int]]], bins: dict[str, tuple[float, ...]], path: Path
) -> Path:
    """Mouse-bin confusion matrices (rows true, columns predicted), counts on a log scale."""
    fig, axes = plt.subplots(1, len(confusion), figsize=(12, 5.2))
    for ax, (head, cm) in zip(np.atleast_1d(axes), confusion.items(), strict=True):
        cm = np.asarray(cm, np.float64)
        im = ax.imshow(
            np.where(cm > 0, cm, np.nan),
            norm=LogNorm(vmin=1, vmax=max(cm.max(), 1)),
            cmap="viridis",
        )
        labels = [f"{b:g}" for b in bins[head]]
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted bin")
        ax.set_ylabel("true bin")
        acc = np.trace(cm) / cm.sum() if cm.sum() else 0.0
        ax.set_title(f"{name}: {head} (accuracy {acc:.3f})", fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)
