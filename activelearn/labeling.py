"""The labeling side: one interface, two implementations (people in Label Studio, or a
simulated annotator), and the one function that turns answers into labeled data.

The round loop pushes a queue and later collects answers; it never knows who answered.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import random
import shutil
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from activelearn.config import ConfigError
from activelearn.faults import kill_point
from activelearn.files import atomic_file
from activelearn.manifest import NOT_IN_POOL, Manifest, Sample
from activelearn.queue import QueueItem

log = logging.getLogger(__name__)

# What became of a queued sample.
ACCEPTED = "accepted"  # label taken into the labeled set
SKIPPED = "skipped"  # cancelled/skipped by the annotator: back to the pool
DISAGREEMENT = "disagreement"  # annotators disagree (or tie): left out, listed
UNKNOWN_LABEL = "unknown_label"  # a class the project does not know: rejected
DELETED = "deleted"  # the task vanished from the labeling tool: back to the pool
EXCLUDED = "excluded"  # skipped, with skipped images kept out of the pool: rejected
REMOVED = "removed"  # its pool file was removed before it was copied: rejected
OPEN = "open"  # not answered yet


@dataclass
class Answer:
    sample_id: str
    status: str  # one of the constants above
    label: str | None = None
    detail: str = ""  # who/what, for the report: task id, the votes, the unknown label


class Annotator(Protocol):
    def push(self, round: int, queue: list[QueueItem], rescored: Sequence[QueueItem] = ()) -> None:
        """Send a round's queue to annotators; pushing the same queue twice adds nothing.

        `rescored`: this round's predictions for samples still open from earlier rounds.
        """

    def collect(
        self,
        round: int,
        queue: list[QueueItem],
        round_dir: Path,
        answered: Sequence[Sample] = (),
    ) -> list[Answer]:
        """One Answer per queued sample. Raw exports are written to `round_dir` first.

        `answered`: the samples earlier rounds labeled or rejected (from the manifest), so
        that an answer changed since its ingest is reported, never silently ignored.
        """


class SimulatedAnnotator:
    """Answers from a labels file (CSV: pool-relative path, label), optionally flipping
    a share `error_rate` of answers to another class, like a careless annotator."""

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
                f"labels file {self.labels_file} not found: the simulated annotator needs "
                "`path,label` rows for the pool (the demo dataset writes one)"
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
            elif label not in self.class_names:  # a folder name: never a new class or a path
                detail = f"label {label!r} of the labels file is not a class: {self.class_names}"
                answers.append(Answer(item.sample_id, UNKNOWN_LABEL, label, detail=detail))
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


def _pool_path(path: str) -> str:
    """A pool path as sample ids spell it: `./` dropped, Unicode in its composed form."""
    return unicodedata.normalize("NFC", PurePosixPath(path.strip()).as_posix())


def apply_answers(
    answers: list[Answer],
    manifest: Manifest,
    pool_dir: str | Path,
    raw_dir: str | Path,
    round: int,
) -> dict[str, int]:
    """Copy accepted images into `raw_dir/<label>/` and record every outcome in the manifest.

    Idempotent: a sample already labeled keeps its first label and is not copied twice
    (an answer changed later is reported by the annotator's `collect`, not applied: the
    rounds since trained on the first one).
    The manifest is saved once, atomically, after the copies, so a kill in between
    leaves images that a rerun recognises (same target path) and no half-written state;
    if the answer changed meanwhile, the rerun moves the earlier copy to its label.
    An image removed from the pool before its copy is rejected (`REMOVED`), not lost:
    put back, it returns to the pool.
    """
    counts = Counter()
    raw_dir = Path(raw_dir)
    for answer in answers:
        current = manifest.samples.get(answer.sample_id)
        if current is not None and current.state in ("labeled", "rejected"):
            counts["unchanged"] += 1
            continue
        if answer.status == ACCEPTED and not copy_labeled(
            answer.sample_id, answer.label, Path(pool_dir), raw_dir
        ):
            answer = Answer(answer.sample_id, REMOVED)
        if answer.status == ACCEPTED:
            manifest.set_state(answer.sample_id, "labeled", round=round, label=answer.label)
        elif answer.status == REMOVED:  # no round: like an unreadable file, back if put back
            log.warning(
                "queued image %s is no longer in %s: rejected (put it back to queue it again)",
                answer.sample_id,
                pool_dir,
            )
            manifest.set_state(answer.sample_id, "rejected", reason=NOT_IN_POOL)
        elif answer.status in (UNKNOWN_LABEL, DISAGREEMENT, EXCLUDED):
            manifest.set_state(answer.sample_id, "rejected", round=round, reason=answer.detail)
        elif answer.status in (SKIPPED, DELETED):
            manifest.set_state(answer.sample_id, "pool")
        # OPEN: stays queued
        counts[answer.status] += 1
    kill_point("ingest:before-manifest")
    manifest.save()
    return dict(counts)


def copy_labeled(sample_id: str, label: str, pool_dir: Path, raw_dir: Path) -> bool:
    """Copy a pool image to `raw_dir/<label>/`, once; False if its pool file is gone.

    A copy under another label (by a killed run, the answer changed since) is moved.
    """
    name = labeled_name(sample_id)
    target = raw_dir / label / name
    for earlier in list(raw_dir.glob(f"*/{glob.escape(name)}")):
        if earlier != target:
            if target.exists():
                earlier.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                earlier.replace(target)
    if target.exists():
        return True
    try:
        source = open(pool_dir / sample_id, "rb")
    except FileNotFoundError:
        return False
    with source, atomic_file(target, "wb") as copy:
        shutil.copyfileobj(source, copy)
    return True


MAX_NAME_BYTES = 200  # file systems allow 255, and atomic_file's temporary name is longer


def labeled_name(sample_id: str) -> str:
    """The file name of a labeled pool image in its class folder: readable, and unique to
    the sample (a hash of its id), so it never clashes with a seed image or another
    sample (`a/b.png` and `a__b.png`). A deep path keeps its end, the file's own name."""
    path = PurePosixPath(sample_id)
    digest = hashlib.blake2b(sample_id.encode(), digest_size=4).hexdigest()
    readable = str(path.with_suffix("")).replace("/", "__")
    while len(f"{readable}~{digest}{path.suffix}".encode()) > MAX_NAME_BYTES:
        readable = readable[1:]
    return f"{readable}~{digest}{path.suffix}"
