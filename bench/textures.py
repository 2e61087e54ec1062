"""A harder generated image set for `campaigns.py --dataset textures`: ten texture classes
(stripes at four angles, fine and coarse checks, dots, rings, a grid, zig-zags), each as
a patch of varied scale and position on a cluttered background, in random colours, with
noise. Colour says nothing about the class; the texture, at any scale, does.

Written in the digits' layout (raw/<class>/, pool/, test/<class>/, pool_labels.csv) so the
campaigns benchmark reads it as it reads the digits.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [
    "stripes_0",
    "stripes_45",
    "stripes_90",
    "stripes_135",
    "checks_fine",
    "checks_coarse",
    "dots",
    "rings",
    "grid",
    "zigzag",
]
SIZE = 32
PER_CLASS = 180  # 1800 images, as many as the digits


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [size, size] pattern in [0, 1] of class `kind`, at a random period and phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(3.0, 6.0)
    phase = rng.uniform(0, 2 * np.pi)
    if kind.startswith("stripes"):
        angle = np.deg2rad(float(kind.split("_")[1]) + rng.uniform(-8, 8))
        u = xx * np.cos(angle) + yy * np.sin(angle)
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    if kind.startswith("checks"):
        p = period / 1.5 if kind.endswith("fine") else period * 1.6
        return ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float64)
    if kind == "dots":
        p = period * 1.3
        d = np.hypot((xx % p) - p / 2, (yy % p) - p / 2)
        return (d < p / 4).astype(np.float64)
    if kind == "rings":
        cy, cx = rng.uniform(0, size, 2)
        return 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(xx - cx, yy - cy) / period + phase)
    if kind == "grid":
        p = period * 1.4
        return (((xx % p) < 1.2) | ((yy % p) < 1.2)).astype(np.float64)
    if kind == "zigzag":
        u = yy + (period / 2) * np.abs(((xx / period) % 2) - 1) * 2
        return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * u / period + phase))
    raise ValueError(kind)


def image(label: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB image [SIZE, SIZE, 3] uint8: clutter, then the class's patch at a random
    scale (40-100% of the side) and place, in two random colours, plus noise."""
    canvas = rng.uniform(0.2, 0.8, 3) * np.ones((SIZE, SIZE, 3))
    for _ in range(rng.integers(3, 8)):  # clutter: random rectangles and lines
        y0, x0 = rng.integers(0, SIZE, 2)
        h, w = rng.integers(1, 10, 2)
        canvas[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 1, 3)
    side = int(rng.integers(int(0.4 * SIZE), SIZE + 1))
    y0, x0 = rng.integers(0, SIZE - side + 1, 2)
    pattern = texture(CLASSES[label], side, rng)[..., None]
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(a - b).sum() < 0.8:  # two colours far enough apart to see the pattern
        b = rng.uniform(0, 1, 3)
    canvas[y0 : y0 + side, x0 : x0 + side] = pattern * a + (1 - pattern) * b
    canvas += rng.normal(0, 0.06, canvas.shape)
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def write_textures(
    root: str | Path, *, seed: int = 0, per_class: int = 2, test_fraction: float = 0.2
) -> None:
    """The texture set in the digits' layout under `root`, deterministic by `seed`
    (the images are the same for every seed; the split is the seed's)."""
    root = Path(root)
    pictures = np.random.default_rng(12345)
    labels = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    rng = np.random.default_rng(seed)
    split = np.full(len(labels), "pool", dtype=object)
    for label in range(len(CLASSES)):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test_fraction))
        split[members[:n_test]] = "test"
        split[members[n_test : n_test + per_class]] = "raw"
    answers = []
    for i, label in enumerate(labels):
        name = f"texture-{i:04d}.png"
        pixels = image(int(label), pictures)
        if split[i] == "pool":
            path = root / "data/pool" / name
            answers.append({"path": name, "label": CLASSES[label]})
        else:
            folder = "raw" if split[i] == "raw" else "test"
            path = root / "data" / folder / CLASSES[label] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    with (root / "data/pool_labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label"])
        writer.writeheader()
        writer.writerows(answers)
