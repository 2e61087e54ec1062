"""Datasets in the campaign layout: the bundled demo, and a source made from your own
labeled images; nothing is downloaded.

    python -m activelearn.data.datasets digits [--root .] [--seed 0] [--per-class 2]
    python -m activelearn.data.datasets split SRC OUT [--seed-per-class 2]
        [--test-per-class 50] [--seed 0]

`split` turns a fully labeled folder (`SRC/<class>/<file>`) into a dataset source for
`data.source=OUT` (see activelearn.data.source): per class `--seed-per-class` labeled seed
images (`raw/`), `--test-per-class` test images (`test/`), the rest into `pool/` under
names that do not tell the class, with their true labels in `pool_labels.csv` for the
simulated annotator. Files are hard-linked (or copied); SRC is not changed.

`digits`
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
from activelearn.data.images import class_folders
from activelearn.data.source import POOL, POOL_LABELS, RAW, TEST, link_or_copy
from activelearn.errors import ConfigError

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


def split_labeled(
    src: str | Path, out: str | Path, *, seed_per_class: int, test_per_class: int, seed: int = 0
) -> dict[str, int]:
    """Write a dataset source into `out` from the labeled folder `src` (see the module's
    docstring); deterministic by `seed`. Refuses an `out` that holds files, and classes
    with too few images for their seed and test images and one for the pool."""
    src, out = Path(src), Path(out)
    classes = class_folders(src)
    if not classes:
        raise ConfigError(f"{src}: no class folders with images; give a folder of <class>/<file>")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: not empty; give a new folder for the dataset source")
    need = seed_per_class + test_per_class + 1
    few = {name: len(files) for name, files in classes.items() if len(files) < need}
    if few:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(few.items()))
        raise ConfigError(
            f"{src}: too few images in {listed}: each class needs {need} (--seed-per-class "
            f"{seed_per_class} + --test-per-class {test_per_class} + 1 for the pool); lower "
            "those, or leave these classes out"
        )
    rng = np.random.default_rng(seed)
    pool = []
    for name, files in classes.items():
        files = [files[i] for i in rng.permutation(len(files))]
        for part, chosen in (
            (RAW, files[:seed_per_class]),
            (TEST, files[seed_per_class : seed_per_class + test_per_class]),
        ):
            for path in chosen:
                link_or_copy(path, out / part / name / path.relative_to(src / name))
        pool += [(path, name) for path in files[seed_per_class + test_per_class :]]
    answers = []
    for i, k in enumerate(rng.permutation(len(pool))):  # names in a shuffled order: no class
        path, name = pool[k]
        pool_name = f"img-{i:06d}{path.suffix.lower()}"
        link_or_copy(path, out / POOL / pool_name)
        answers.append((pool_name, name))
    with atomic_file(out / POOL_LABELS, newline="") as f:
        csv.writer(f).writerows([("path", "label"), *answers])
    n = len(classes)
    return {RAW: n * seed_per_class, TEST: n * test_per_class, POOL: len(pool)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    digits = commands.add_parser("digits", help="the bundled digits, into a workspace's layout")
    digits.add_argument("--root", default=".", help="campaign workspace (default: .)")
    digits.add_argument("--seed", type=int, default=0)
    digits.add_argument("--per-class", type=int, default=2, help="labeled seed images per class")
    digits.add_argument("--test-fraction", type=float, default=0.2)
    split = commands.add_parser("split", help="a dataset source from a labeled <class>/ folder")
    split.add_argument("src", type=Path, help="labeled images: SRC/<class>/<file>")
    split.add_argument("out", type=Path, help="the dataset source to write (a new folder)")
    split.add_argument("--seed-per-class", type=int, default=2, help="labeled images to start")
    split.add_argument("--test-per-class", type=int, default=50, help="fixed test images")
    split.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "split":
        try:
            counts = split_labeled(
                args.src,
                args.out,
                seed_per_class=args.seed_per_class,
                test_per_class=args.test_per_class,
                seed=args.seed,
            )
        except ConfigError as err:
            raise SystemExit(str(err)) from None
        print(f"dataset source written to {args.out.resolve()}: {counts}")
        print(f"use it with: python -m activelearn data=folder data.source={args.out}")
        return
    counts = write_digits(
        args.root, seed=args.seed, per_class=args.per_class, test_fraction=args.test_fraction
    )
    print(f"digits written under {Path(args.root).resolve()}: {counts}")


if __name__ == "__main__":
    main()
