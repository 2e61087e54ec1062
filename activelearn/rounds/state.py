"""What a round has done: `rounds/<N>/state.json`, one typed result per finished phase.

The file stays plain JSON that tools read without this module (`tracking.report`,
`bench/rounds.py`): `{"round": N, "phases": {<phase>: {<field>: value, ..., "seconds": s}},
"late_seconds_logged": bool}`. Fields only ever get added, with defaults, so a file an
older version wrote loads as it is, and a round it left unfinished resumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from activelearn.core.files import write_atomic
from activelearn.workspace.layout import round_dir


@dataclass(kw_only=True)
class PhaseResult:
    """What a phase did. `seconds`, its wall time, is set by the round that ran it."""

    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = data.pop("seconds")  # last: it is measured last
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass
class IngestResult(PhaseResult):
    """The answers collected to earlier queues, and what became of them."""

    answers: int  # one per open queue item
    open: int = 0  # of them, still unanswered
    outcomes: dict[str, int] = field(default_factory=dict)  # answers by labeling status

    def to_json(self) -> dict[str, Any]:  # each outcome a key of its own, as it always was
        return {
            "answers": self.answers,
            "open": self.open,
            **self.outcomes,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        outcomes = dict(data)
        return cls(
            answers=outcomes.pop("answers"),
            open=outcomes.pop("open", 0),  # none when there was nothing to collect
            seconds=outcomes.pop("seconds", None),
            outcomes=outcomes,  # the keys left
        )


@dataclass
class TrainResult(PhaseResult):
    """The model `dvc repro` trained on the labeled set; none at a cold start."""

    labeled: int
    cold_start: bool = False  # no labels yet: no model
    per_class: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # evaluation/metrics.json: on the test set
    fit_seconds: float | None = None  # the optimizer steps alone
    repro_seconds: dict[str, float] = field(default_factory=dict)  # per DVC stage, and "dvc"
    # Answers spent by then: `labeled` plus the images answered other, skipped or
    # rejected (`not_labeled`, by kind); None in rounds of versions before it was counted.
    answers: int | None = None
    not_labeled: dict[str, int] = field(default_factory=dict)


@dataclass
class SelectResult(PhaseResult):
    """The stop rule's verdict and, unless it stopped the campaign, the batch queued."""

    stop: bool
    agreement: float | None = None  # of this round's model with the last one's, on the stop set
    agreement_images: int | None = None  # stop-set images that agreement is over
    reason: str = ""  # why the campaign stops here
    # The scoring's summary (also in queue_summary.json), when a batch was selected:
    strategy: str | None = None
    cold_start: bool | None = None
    scored: int | None = None
    unreadable: int | None = None
    queued: int = 0
    pool_confidence: float | None = None
    class_mix: dict[str, int] = field(default_factory=dict)


@dataclass
class TrackResult(PhaseResult):
    """The round's MLflow run and the model version it registered (none at a cold start)."""

    run_id: str
    model_version: int | None = None


@dataclass
class PushResult(PhaseResult):
    """The queue items sent to the labeling side."""

    pushed: int


@dataclass
class CommitResult(PhaseResult):
    """The round's commit in the workspace's git history, tagged `round-N`."""

    committed: bool
    tag: str | None = None


RESULTS: dict[str, type[PhaseResult]] = {
    "ingest": IngestResult,
    "train": TrainResult,
    "select": SelectResult,
    "track": TrackResult,
    "push": PushResult,
    "commit": CommitResult,
}
PHASES = tuple(RESULTS)  # in the order a round runs them


@dataclass
class RoundState:
    """`rounds/<N>/state.json` of a workspace: the result of every finished phase."""

    round: int
    ingest: IngestResult | None = None
    train: TrainResult | None = None
    select: SelectResult | None = None
    track: TrackResult | None = None
    push: PushResult | None = None
    commit: CommitResult | None = None
    late_seconds_logged: bool = False  # the seconds of `track` and after are on its run
    workspace: Path = field(default=Path(), repr=False, compare=False)

    @classmethod
    def load(cls, n: int, workspace: Path = Path()) -> RoundState:
        """Round `n`'s state in `workspace`; without phases if the round has not started."""
        state = cls(n, workspace=workspace)
        if state.path.exists():
            data = json.loads(state.path.read_text())
            for phase, result in data["phases"].items():
                setattr(state, phase, RESULTS[phase].from_json(result))
            state.late_seconds_logged = data.get("late_seconds_logged", False)
        return state

    @property
    def path(self) -> Path:
        return self.workspace / round_dir(self.round) / "state.json"

    @property
    def phases(self) -> dict[str, PhaseResult]:
        """The finished phases' results, in the order they ran."""
        return {p: result for p in PHASES if (result := getattr(self, p)) is not None}

    @property
    def finished(self) -> bool:
        return len(self.phases) == len(PHASES)

    def record(self, phase: str, result: PhaseResult) -> None:
        setattr(self, phase, result)
        self.save()

    def save(self) -> None:
        data = {
            "round": self.round,
            "phases": {phase: result.to_json() for phase, result in self.phases.items()},
            "late_seconds_logged": self.late_seconds_logged,
        }
        write_atomic(self.path, json.dumps(data, indent=2))


def agreement_history(n: int, workspace: Path = Path()) -> list[float | None]:
    """The stop rule's agreement of rounds 0 to `n`, each with the round before; None for
    a round that measured none."""
    states = (RoundState.load(k, workspace) for k in range(n + 1))
    return [s.select.agreement if s.select else None for s in states]
