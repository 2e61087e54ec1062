"""The simulated annotator: an oracle that answers from a labels file."""

from __future__ import annotations

import csv
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from activelearn.errors import ConfigError
from activelearn.labeling.answers import ACCEPTED, OTHER, SKIPPED, Answer, _pool_path
from activelearn.workspace.manifest import Sample
from activelearn.workspace.queue import QueueItem

log = logging.getLogger(__name__)


class SimulatedAnnotator:
    """Answers from a labels file (CSV: pool-relative path, label), optionally flipping
    a share `error_rate` of answers to another class, like a careless annotator. An
    image whose label is not one of the classes is answered "other", as a person would
    answer an image of none of them."""

    def __init__(
        self,
        labels_file: str | Path,
        class_names: list[str],
        error_rate: float = 0.0,
        seed: int = 0,
    ):
        self.labels_file = Path(labels_file)
        if not self.labels_file.is_file():
            raise FileNotFoundError(
                f"labels file {self.labels_file.absolute()} not found: the simulated annotator "
                "needs `path,label` rows for the pool (the demo dataset writes one)"
            )
        with self.labels_file.open(newline="", encoding="utf-8-sig") as f:  # Excel's BOM too
            rows = csv.DictReader(f)
            if not {"path", "label"} <= set(rows.fieldnames or ()):
                raise ConfigError(
                    f"labels file {self.labels_file}: its first row must be the header "
                    f"`path,label`, not {rows.fieldnames}; then one row per pool image: its "
                    "path relative to the pool folder, and its class"
                )
            self.truth = {_pool_path(row["path"]): row["label"].strip() for row in rows}
        self.class_names = class_names
        self.error_rate = error_rate
        self.seed = seed

    def push(self, round: int, queue: list[QueueItem], rescored: Sequence[QueueItem] = ()) -> None:
        pass  # the oracle needs no tasks

    def collect(
        self,
        round: int,
        queue: list[QueueItem],
        round_dir: Path,
        answered: Sequence[Sample] = (),
    ) -> list[Answer]:
        rng = random.Random(f"{self.seed}-{round}")  # same answers when a round is rerun
        answers, missing = [], []
        for item in queue:
            label = self.truth.get(_pool_path(item.sample_id))
            if label is None:
                missing.append(item.sample_id)
                answers.append(Answer(item.sample_id, SKIPPED, detail="not in the labels file"))
            elif label not in self.class_names:  # never a new class (or a path) of its own
                detail = f"other: label {label!r} of the labels file is not a class"
                answers.append(Answer(item.sample_id, OTHER, detail=detail))
            else:
                if rng.random() < self.error_rate:
                    label = rng.choice([c for c in self.class_names if c != label] or [label])
                answers.append(Answer(item.sample_id, ACCEPTED, label))
        if missing and len(missing) == len(queue):
            example = next(iter(self.truth), "nothing")
            raise ConfigError(
                f"none of the {len(queue)} queued images is in the labels file "
                f"{self.labels_file} (queued: {missing[0]!r}; the file has {example!r}): its "
                "paths must be relative to the pool folder, as in rounds/<N>/queue.jsonl"
            )
        if missing:
            log.warning(
                "%d queued images are not in the labels file %s, back to the pool: %s",
                len(missing),
                self.labels_file,
                missing[:5],
            )
        return answers
