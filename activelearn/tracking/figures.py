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
    """The images in rows of `cols`, each under its caption. One picture of them all (an
    axes per image costs about 30 ms each to lay out); images share one size."""
    rows = max(1, math.ceil(len(images) / cols))
    height, width = images[0].shape[:2] if images else (1, 1)
    pad = max(1, width // 8)
    cell_h, cell_w = height + 3 * pad, width + pad  # room above each image for its caption
    sheet = np.ones((rows * cell_h, cols * cell_w, 3), dtype=np.float32)  # white paper
    fig, ax = plt.subplots(figsize=(cols * 1.3, rows * 1.5))
    ax.axis("off")
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        top, left = (i // cols) * cell_h + 3 * pad, (i % cols) * cell_w
        sheet[top : top + height, left : left + width] = image  # gray broadcasts to RGB
        ax.text(left + width / 2, top - pad, caption, ha="center", va="bottom", fontsize=7)
    ax.imshow(sheet, vmin=0, vmax=1, interpolation="nearest")
    return _save(fig, path)


def learning_curves(
    curves: dict[str, list[tuple[float, list[float]]]],
    path: Path,
    target: float | None = None,
    xlabel: str = "labels",
) -> Path:
    """Test accuracy against labels (or `xlabel`, e.g. answers spent): mean line and min-max
    band per strategy.

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
    ax.set(xlabel=xlabel, ylabel="test accuracy", title="learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
