"""The manifest: the state of every pool sample, in one CSV file written atomically.

States: `pool` (waiting), `queued` (sent to annotators in `round`), `labeled` (answered
in `round` with `label`), `other` (answered "of none of the classes" in `round`: out of
the pool for good, kept as a known negative, with `reason`), `rejected` (unreadable, gone
from the pool folder, or refused, with `reason`). `skips`: how often the sample was
skipped and came back to the pool.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from activelearn.core.files import atomic_file
from activelearn.data.images import (
    Preprocessing,
    UnreadableImage,
    list_files,
    preprocess,
    read_header,
    sample_id,
)

log = logging.getLogger(__name__)

STATES = ("pool", "queued", "labeled", "other", "rejected")
NOT_IN_POOL = "image no longer in the pool"  # the reason of a sample whose file was removed


@dataclass
class Sample:
    sample_id: str
    state: str = "pool"
    round: int | None = None
    label: str | None = None
    reason: str | None = None
    skips: int = 0


class Manifest:
    """All pool samples by id; `save` replaces the file in one rename, never half-written."""

    def __init__(self, path: str | Path, samples: dict[str, Sample] | None = None):
        self.path = Path(path)
        self.samples: dict[str, Sample] = samples or {}

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        samples = {}
        if path.exists():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    sample = Sample(
                        sample_id=row["sample_id"],
                        state=row["state"],
                        round=int(row["round"]) if row["round"] else None,
                        label=row["label"] or None,
                        reason=row["reason"] or None,
                        skips=int(row.get("skips") or 0),  # manifests before skips: none
                    )
                    if sample.state not in STATES:
                        raise ValueError(
                            f"{path}: sample {sample.sample_id!r} has unknown state "
                            f"{sample.state!r}; expected one of {STATES}"
                        )
                    samples[sample.sample_id] = sample
        return cls(path, samples)

    def save(self) -> None:
        columns = [f.name for f in fields(Sample)]
        with atomic_file(self.path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for sample in self.samples.values():
                writer.writerow({k: "" if v is None else v for k, v in asdict(sample).items()})

    def in_state(self, state: str) -> list[str]:
        return [s.sample_id for s in self.samples.values() if s.state == state]

    def counts(self) -> dict[str, int]:
        counted = Counter(s.state for s in self.samples.values())
        return {state: counted.get(state, 0) for state in STATES}

    def set_state(
        self,
        sample_id: str,
        state: str,
        *,
        round: int | None = None,
        label: str | None = None,
        reason: str | None = None,
        skips: int | None = None,
    ) -> None:
        """A sample's new state; its skips are kept unless given."""
        if state not in STATES:
            raise ValueError(f"unknown sample state {state!r}; expected one of {STATES}")
        if skips is None:
            skips = self.samples[sample_id].skips if sample_id in self.samples else 0
        self.samples[sample_id] = Sample(sample_id, state, round, label, reason, skips)

    def sync_pool(self, pool_dir: str | Path, prep: Preprocessing) -> dict[str, int]:
        """Add pool files not yet listed; files that do not decode are recorded as rejected,
        and files whose names are not UTF-8 are skipped (and counted) until renamed.

        New files are admitted on their header alone (format, size, the pixel limit): a
        file that then fails to decode is rejected when the pool is scored. Files rejected
        as unreadable or gone before (a file being copied, a permission since fixed, a file
        put back) are decoded in full: they go back to the pool once they decode. Samples
        in `pool` whose file was removed are rejected until it is back; `queued` ones are
        left to the ingest (a killed one may have copied them).
        Returns counts of what was added or removed.
        """
        added = Counter()
        present = set()
        for path in list_files(pool_dir):
            sid = sample_id(path, pool_dir)
            present.add(sid)
            known = self.samples.get(sid)
            if known is not None and not _unreadable(known):
                continue
            if not _utf8(sid):  # no id for it in the manifest, the queue or Label Studio
                log.warning("pool file %r skipped: rename it, its name is not UTF-8", bytes(path))
                added["skipped"] += 1
                continue
            try:
                if known is None:
                    read_header(path)
                else:
                    preprocess(path, prep)
            except UnreadableImage as err:
                if known is None:
                    log.warning("pool image rejected: %s", err)
                    self.set_state(sid, "rejected", reason=str(err))
                    added["rejected"] += 1
                continue
            if known is not None:
                log.info("pool image %s is readable now: back in the pool", sid)
            self.set_state(sid, "pool")
            added["pool" if known is None else "readable again"] += 1
        if Path(pool_dir).is_dir():  # a pool folder not there at all is not a removal
            for sid in self.in_state("pool"):
                if sid not in present:
                    log.warning(
                        "pool image %s was removed from %s: rejected until it is put back",
                        sid,
                        pool_dir,
                    )
                    self.set_state(sid, "rejected", reason=NOT_IN_POOL)
                    added["removed"] += 1
        return dict(added)


def _unreadable(sample: Sample) -> bool:
    """Rejected because of its file: it did not decode or was removed (annotators'
    rejections carry a round)."""
    return sample.state == "rejected" and sample.round is None


def _utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:  # undecodable bytes of the file name, kept as surrogates
        return False
    return True
