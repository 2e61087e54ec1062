"""The labeling side: one interface, two implementations (people in Label Studio, or a
simulated annotator), and the one function that turns answers into labeled data.

The round loop pushes a queue and later collects answers; it never knows who answered.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import shutil
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from activelearn.core.faults import kill_point
from activelearn.core.files import atomic_file
from activelearn.workspace.manifest import NOT_IN_POOL, Manifest, Sample
from activelearn.workspace.queue import QueueItem

log = logging.getLogger(__name__)


# What became of a queued sample.
ACCEPTED = "accepted"  # label taken into the labeled set
OTHER = "other"  # of none of the classes: out of the pool for good, a known negative
SKIPPED = "skipped"  # cancelled/skipped by the annotator: back to the pool
DISAGREEMENT = "disagreement"  # annotators disagree (or tie), no answer asked: rejected
REQUEUED = "requeued"  # annotators disagree (or tie): one more answer asked, still queued
UNKNOWN_LABEL = "unknown_label"  # a class the project does not know: rejected
DELETED = "deleted"  # the task vanished from the labeling tool: back to the pool
EXCLUDED = "excluded"  # skipped, with skipped images kept out of the pool: rejected
SKIPPED_TOO_OFTEN = "skipped_too_often"  # skipped more than labeling.max_skips times: rejected
REMOVED = "removed"  # its pool file was removed before it was copied: rejected
OPEN = "open"  # not answered yet

# What an answer makes of its image (`OUTCOME`), as ingest reports and `apply_answers` does.
LABELED = "labeled"  # into the labeled set, under its label
NEGATIVE = "other"  # into the folder of images of no class, never queued again
REJECTED = "rejected"  # out of the campaign (one removed from the pool: until put back)
BACK_TO_POOL = "back_to_pool"  # a later round may queue it again
QUEUED_AGAIN = "queued_again"  # still queued, for one more answer
STILL_OPEN = "still_open"  # still queued, not answered yet
OUTCOME = {
    ACCEPTED: LABELED,
    OTHER: NEGATIVE,
    DISAGREEMENT: REJECTED,
    UNKNOWN_LABEL: REJECTED,
    EXCLUDED: REJECTED,
    SKIPPED_TOO_OFTEN: REJECTED,
    REMOVED: REJECTED,
    SKIPPED: BACK_TO_POOL,
    DELETED: BACK_TO_POOL,
    REQUEUED: QUEUED_AGAIN,
    OPEN: STILL_OPEN,
}
UNCHANGED = "unchanged"  # `apply_answers`: labeled or rejected before (a rerun), left alone
# What an answer costs: every one that is not still waiting. Budgets and curves count these.
SPENT = (LABELED, NEGATIVE, REJECTED, BACK_TO_POOL)
DONE = ("labeled", "other", "rejected")  # manifest states an answer leaves for good


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


def _pool_path(path: str) -> str:
    """A pool path as sample ids spell it: `./` dropped, Unicode in its composed form."""
    return unicodedata.normalize("NFC", PurePosixPath(path.strip()).as_posix())


def apply_answers(
    answers: list[Answer],
    manifest: Manifest,
    pool_dir: str | Path,
    raw_dir: str | Path,
    round: int,
    *,
    other_dir: str | Path | None = None,
    max_skips: int | None = None,
) -> dict[str, int]:
    """Copy accepted images into `raw_dir/<label>/` and record every outcome in the manifest.

    An image answered "other" is copied into `other_dir` (default: `other` beside
    `raw_dir`) and leaves the pool for good. A skipped image goes back to the pool at most
    `max_skips` times (None: always), then it is rejected as `SKIPPED_TOO_OFTEN`.

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
    other_dir = Path(other_dir) if other_dir is not None else raw_dir.parent / "other"
    for answer in answers:
        current = manifest.samples.get(answer.sample_id)
        if current is not None and current.state in DONE:
            counts[UNCHANGED] += 1
            continue
        if answer.status == ACCEPTED and not copy_labeled(
            answer.sample_id, answer.label, Path(pool_dir), raw_dir
        ):
            answer = Answer(answer.sample_id, REMOVED)
        if answer.status == OTHER and not copy_other(answer.sample_id, Path(pool_dir), other_dir):
            answer = Answer(answer.sample_id, REMOVED)
        applied = current is not None and current.state == "pool"  # a rerun: counted
        skips = (current.skips if current else 0) + (answer.status == SKIPPED and not applied)
        if answer.status == SKIPPED and max_skips is not None and skips > max_skips:
            detail = f"skipped {skips} times (labeling.max_skips={max_skips}); {answer.detail}"
            answer = Answer(answer.sample_id, SKIPPED_TOO_OFTEN, detail=detail)
        outcome = OUTCOME[answer.status]
        if outcome == LABELED:
            manifest.set_state(answer.sample_id, "labeled", round=round, label=answer.label)
        elif outcome == NEGATIVE:
            reason = answer.detail or "answered other: none of the classes"
            manifest.set_state(answer.sample_id, "other", round=round, reason=reason)
        elif answer.status == REMOVED:  # no round: like an unreadable file, back if put back
            log.warning(
                "queued image %s is no longer in %s: rejected (put it back to queue it again)",
                answer.sample_id,
                pool_dir,
            )
            manifest.set_state(answer.sample_id, "rejected", reason=NOT_IN_POOL)
        elif outcome == REJECTED:
            manifest.set_state(answer.sample_id, "rejected", round=round, reason=answer.detail)
        elif outcome == BACK_TO_POOL:
            manifest.set_state(answer.sample_id, "pool", skips=skips)
        # QUEUED_AGAIN, STILL_OPEN: stay queued
        counts[answer.status] += 1
    kill_point("ingest:before-manifest")
    manifest.save()
    return dict(counts)


def outcome_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by status (as `apply_answers` gives them) as counts by outcome: every
    outcome, and `unchanged` when a rerun found answers already applied."""
    by_outcome = dict.fromkeys(OUTCOME.values(), 0)
    for status, n in counts.items():
        outcome = OUTCOME.get(status, status)
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    return by_outcome


def describe_outcomes(counts: Mapping[str, int]) -> str:
    """`labeled 8, rejected 1, back to pool 2, queued again 1, still open 3`: what ingest
    made of its answers (counts by status, as `apply_answers` gives them)."""
    return ", ".join(
        f"{outcome.replace('_', ' ')} {n}" for outcome, n in outcome_counts(counts).items()
    )


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
    return _copy_once(pool_dir / sample_id, target)


def promote_other(manifest: Manifest, raw_dir: str | Path, other_dir: str | Path) -> int:
    """Images answered "other" that a person has since moved (or copied) into a class
    folder of `raw_dir`, a class added: labeled with that class, their answer kept, and
    no longer known negatives (a copy left in `other_dir` is removed). How many."""
    raw_dir, other_dir = Path(raw_dir), Path(other_dir)
    promoted = 0
    for sample in list(manifest.samples.values()):
        if sample.state != "other":
            continue
        name = labeled_name(sample.sample_id)
        found = sorted(raw_dir.glob(f"*/{glob.escape(name)}"))
        if found:
            label = found[0].parent.name
            manifest.set_state(sample.sample_id, "labeled", round=sample.round, label=label)
            (other_dir / name).unlink(missing_ok=True)
            promoted += 1
    return promoted


def copy_other(sample_id: str, pool_dir: Path, other_dir: Path) -> bool:
    """Copy a pool image answered "other" to `other_dir/`, once; False if it is gone."""
    return _copy_once(pool_dir / sample_id, other_dir / labeled_name(sample_id))


def _copy_once(source_path: Path, target: Path) -> bool:
    """`source_path` copied to `target` unless it is there; False if the source is gone."""
    if target.exists():
        return True
    try:
        source = open(source_path, "rb")
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
