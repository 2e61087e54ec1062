"""A round's queue: the selected samples, most informative first (`rounds/<N>/queue.jsonl`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from activelearn.core.files import write_atomic


@dataclass
class QueueItem:
    sample_id: str  # pool-relative POSIX path
    rank: int  # 1 = most informative
    predicted: str | None  # the model's class; None at a cold start without a model
    confidence: float | None  # the model's probability of `predicted`
    score: float  # the strategy's score, higher = more informative
    scores: dict[str, float] = field(default_factory=dict)  # every measure computed


def write_queue(path: str | Path, items: list[QueueItem]) -> None:
    """Write the queue in one rename, so a killed round never leaves half a queue."""
    lines = (json.dumps(asdict(item), allow_nan=False) + "\n" for item in items)  # strict JSON
    write_atomic(path, "".join(lines))


def read_queue(path: str | Path) -> list[QueueItem]:
    with Path(path).open() as f:
        return [QueueItem(**json.loads(line)) for line in f if line.strip()]
