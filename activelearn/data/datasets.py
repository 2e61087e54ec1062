"""Bundled demo data written into the campaign layout; nothing is downloaded.

    python -m activelearn.data.datasets digits [--root .] [--seed 0] [--per-class 2]

writes scikit-learn's 1,797 handwritten digits (8x8, gray) as PNG files: a labeled
seed set (`data/raw/<digit>/`), the pool (`data/pool/`), a fixed test set
(`data/test/<digit>/`), and `data/pool_labels.csv` (pool-relative path, label), which
only the simulated annotator reads. A write killed midway is done again by the next one:
`WRITING` marks it until the last file is in place.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from activelearn.core.faults import kill_point
from activelearn.core.files import PARTIAL, atomic_file

log = logging.getLogger(__name__)

DATASETS = ("digits",)
WRITING = f".digits{PARTIAL}"  # in the root while the demo is written; gone once it is whole


def write_digits(
    root: str | Path = ".",
    *,
    seed: int = 0,
    per_class: int = 2,
    test_fraction: float = 0.2,
    raw_dir: str = "data/raw",
    pool_dir: str = "data/pool",
    test_dir: str = "data/test",
    pool_labels: str = "data/pool_labels.csv",
) -> dict[str, int]:
    """Write the digits into the layout under `root`; deterministic by `seed`."""
    from sklearn.datasets import load_digits

    root = Path(root)
    digits = load_digits()
    images = np.round(digits.images / 16.0 * 255.0).astype(np.uint8)
    labels = digits.target
    rng = np.random.default_rng(seed)

    split = np.full(len(labels), "pool", dtype=object)
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_test = int(round(len(members) * test_fraction))
        split[members[:n_test]] = "test"
        split[members[n_test : n_test + per_class]] = "raw"

    folders = {"raw": root / raw_dir, "pool": root / pool_dir, "test": root / test_dir}

    def places(i: int, label: int) -> dict[str, Path]:
        name = f"digit-{i:04d}.png"
        return {
            part: folder / name if part == "pool" else folder / str(label) / name
            for part, folder in folders.items()
        }

    writing = root / WRITING
    if writing.exists():  # a write was killed, maybe with other settings: undo all of it
        for i, label in enumerate(labels):
            for path in places(i, label).values():
                path.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    writing.touch()
    answers = []
    for i, (image, label, part) in enumerate(zip(images, labels, split, strict=True)):
        kill_point(f"digits:{i}")  # crash tests: killed before image i
        path = places(i, label)[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        if part == "pool":
            answers.append((path.name, str(label)))

    with atomic_file(root / pool_labels, newline="") as f:
        csv.writer(f).writerows([("path", "label"), *answers])
    writing.unlink()
    counts = {part: int((split == part).sum()) for part in folders}
    log.info("wrote digits: %s", counts)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--root", default=".", help="campaign workspace (default: .)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=2, help="labeled seed images per class")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    counts = write_digits(
        args.root, seed=args.seed, per_class=args.per_class, test_fraction=args.test_fraction
    )
    print(f"digits written under {Path(args.root).resolve()}: {counts}")


if __name__ == "__main__":
    main()
