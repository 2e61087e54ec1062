"""The campaign's Label Studio state file (`labeling.state_file`, no secrets): the project
and its claim, the pool's storage, and each round's view and task ids.

JSON as earlier versions wrote it: keys sorted, unset fields left out, rounds keyed by
their number as a string. Saved atomically: a kill leaves the old file or the new one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from activelearn.core.files import write_atomic
from activelearn.errors import LabelStudioError


@dataclass
class RoundTasks:
    """What a round pushed: its Data Manager view and its tasks."""

    tasks: dict[str, int] = field(default_factory=dict)  # sample id -> task id
    view_id: int | None = None


@dataclass
class CampaignState:
    url: str | None = None  # the server the project is on
    project_id: int | None = None
    project_title: str | None = None  # as created; it may have been renamed since
    # Saved before the project is created and written into its description: a rerun
    # after a kill finds the project by it (see `Project.ensure`).
    project_claim: str | None = None
    classes: list[str] | None = None  # the choices the labeling config was last given
    storage_id: int | None = None  # the local-files storage covering the pool...
    storage_path: str | None = None  # ...at this path
    rounds: dict[int, RoundTasks] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> CampaignState:
        """The state in `path`; an empty one when there is no file."""
        if not path.is_file():
            return cls()
        try:
            content = json.loads(path.read_text())
            unknown = set(content) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            rounds = {int(n): RoundTasks(**r) for n, r in content.pop("rounds", {}).items()}
            return cls(**content, rounds=rounds)
        except (ValueError, TypeError, AttributeError) as err:
            raise LabelStudioError(
                f"{path} is not a Label Studio state file this version can read ({err}): "
                "put back the one a run wrote, or remove it to start a new project"
            ) from None

    def save(self, path: Path) -> None:
        content = asdict(self)
        content["rounds"] = {
            str(n): {key: value for key, value in r.items() if value is not None}
            for n, r in content["rounds"].items()
        }
        kept = {key: value for key, value in content.items() if value not in (None, {})}
        write_atomic(path, (json.dumps(kept, indent=2, sort_keys=True) + "\n").encode())

    def round(self, n: int) -> RoundTasks:
        """Round `n`'s record, added when missing."""
        return self.rounds.setdefault(n, RoundTasks())

    def pushed_tasks(self, round: int) -> dict[str, tuple[int, int]]:
        """The task each sample should have, as (round, task id): this round's, else the
        newest pushed."""
        pushed: dict[str, tuple[int, int]] = {}
        for n, record in sorted(self.rounds.items()):
            for sample, task_id in record.tasks.items():
                if pushed.get(sample, (None,))[0] != round:
                    pushed[sample] = (n, task_id)
        return pushed
