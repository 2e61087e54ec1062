"""Class discovery: the images people answered "other" for (known negatives, in
`data.other_dir`), read back for the strategies, and grouped: when many "other" answers
are alike, the round report lists them as a candidate new class (`rounds/<N>/new_classes.json`
and a grid of examples per candidate), for a person to name and add (docs: "Adding a class").
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import numpy as np

from activelearn.core.files import write_atomic
from activelearn.data.images import Preprocessing, UnreadableImage, list_files, preprocess
from activelearn.strategies.open_set import alike_groups

log = logging.getLogger(__name__)

NEW_CLASSES = "new_classes.json"  # in the round's folder
EXAMPLES = 16  # images in a candidate's grid


def other_images(
    other_dir: str | Path, prep: Preprocessing
) -> tuple[list[Path], np.ndarray | None]:
    """The images answered "other", and their model inputs; (no paths, None) if none."""
    paths, decoded = [], []
    for path in list_files(other_dir):
        with contextlib.suppress(UnreadableImage):
            decoded.append(preprocess(path, prep))
            paths.append(path)
    return paths, (np.stack(decoded) if decoded else None)


def list_new_classes(
    classifier,
    paths: list[Path],
    x: np.ndarray | None,
    min_answers: int,
    round_dir: Path,
    seed: int,
) -> list[dict]:
    """Group the "other" answers by the model's features; each group of at least
    `min_answers` is a candidate new class, written to `round_dir/new_classes.json`
    (largest first: how many answers, and example files). None: nothing written."""
    if x is None or min_answers < 1 or len(paths) < min_answers:
        return []
    _, features = classifier.predict_with_features(x)
    candidates = [
        {"answers": len(group), "examples": [str(paths[i]) for i in group]}
        for group in alike_groups(features, min_answers, seed)
    ]
    if candidates:
        write_atomic(round_dir / NEW_CLASSES, json.dumps(candidates, indent=2))
        for number, candidate in enumerate(candidates, start=1):
            log.info(
                "candidate new class %d: %d images answered other are alike (%s); to add "
                "it, move them into data/raw/<its name>/ (docs: Adding a class)",
                number,
                candidate["answers"],
                round_dir / f"new_class_{number}.png",
            )
    return candidates


def new_class_grids(round_dir: Path, prep: Preprocessing) -> list[Path]:
    """A grid of examples per candidate new class of the round, for its report."""
    from activelearn.tracking import figures as plots

    listed = round_dir / NEW_CLASSES
    if not listed.exists():
        return []
    grids = []
    for number, candidate in enumerate(json.loads(listed.read_text()), start=1):
        images, captions = [], []
        for example in candidate["examples"][:EXAMPLES]:
            with contextlib.suppress(UnreadableImage):  # moved since: into a class folder
                images.append(preprocess(example, prep))
                captions.append(Path(example).name.split("~")[0][-14:])
        if images:
            path = round_dir / f"new_class_{number}.png"
            grids.append(plots.image_grid(images, captions, path))
    return grids
