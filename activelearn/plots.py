"""PNG figures for MLflow and reports: where people would rather look than read."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path) -> Path:
    matrix = np.asarray(matrix)
    size = max(4, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="actual",
        title="confusion matrix (test set)",
    )
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > matrix.max() / 2 else "black",
        )
    return _save(fig, path)


def histogram(values: np.ndarray, marked: np.ndarray, label: str, path: Path) -> Path:
    """Distribution of a pool score, with the queued samples' scores marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(values, bins=40, color="#8aa", label="pool")
    for value in marked:
        ax.axvline(value, color="#c33", alpha=0.3, linewidth=1)
    ax.set(xlabel=label, ylabel="samples", title=f"pool {label} (red: queued)")
    return _save(fig, path)


def image_grid(images: list[np.ndarray], captions: list[str], path: Path, cols: int = 8) -> Path:
    rows = max(1, math.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image.squeeze(), cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
    return _save(fig, path)


def learning_curves(
    curves: dict[str, list[tuple[float, list[float]]]], path: Path, target: float | None = None
) -> Path:
    """Test accuracy against labels: mean line and min-max band per strategy.

    `curves`: {name: [(labels, [accuracy per seed]), ...]}.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in sorted(curves.items()):
        points = sorted(points)
        x = [p[0] for p in points]
        mean = [float(np.mean(p[1])) for p in points]
        ax.plot(x, mean, marker=".", label=name)
        if any(len(p[1]) > 1 for p in points):
            ax.fill_between(x, [min(p[1]) for p in points], [max(p[1]) for p in points], alpha=0.15)
    if target:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="labels", ylabel="test accuracy", title="learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
