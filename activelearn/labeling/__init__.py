"""The labeling side: one interface (`Annotator`), two implementations (the simulated
annotator, and people in Label Studio: `labeling.labelstudio`), and the one function that
turns answers into labeled data.

Imports `workspace`, `data`, `core` and `config`.
"""

from activelearn.labeling.answers import (
    ACCEPTED,
    DELETED,
    DISAGREEMENT,
    DONE,
    EXCLUDED,
    OPEN,
    OTHER,
    OUTCOME,
    REMOVED,
    REQUEUED,
    SKIPPED,
    SKIPPED_TOO_OFTEN,
    SPENT,
    UNKNOWN_LABEL,
    Annotator,
    Answer,
    apply_answers,
    describe_outcomes,
    promote_other,
)
from activelearn.labeling.simulated import SimulatedAnnotator

__all__ = [
    "ACCEPTED",
    "DELETED",
    "DISAGREEMENT",
    "DONE",
    "EXCLUDED",
    "OPEN",
    "OTHER",
    "OUTCOME",
    "REMOVED",
    "REQUEUED",
    "SKIPPED",
    "SKIPPED_TOO_OFTEN",
    "SPENT",
    "UNKNOWN_LABEL",
    "Annotator",
    "Answer",
    "SimulatedAnnotator",
    "apply_answers",
    "describe_outcomes",
    "promote_other",
]
