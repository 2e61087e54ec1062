"""Stopping criteria: when a campaign has asked for enough labels.

Each criterion is a small class with one method, `stop(progress)`: why the campaign
should stop now, or None to go on. The round loop asks them in order (`stop_reason`),
and the first reason ends the campaign. Pure: the round loop measures what they judge
(labels spent and asked for, each round's agreement of consecutive models, from
`agreement`) and passes it in; nothing here sees a model or a workspace.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from activelearn.config import CampaignConfig


@dataclass(frozen=True)
class Progress:
    """Where a campaign stands once a round's model is trained."""

    labeled: int  # labels that model was trained on
    waiting: int = 0  # images queued earlier and not answered yet: labels already asked for
    # Each round's agreement of its model with the one before, oldest first, this round's
    # last; None for a round that measured none (no model, or nothing left to compare).
    agreements: Sequence[float | None] = ()
    # Answers spent: the labels, plus images answered "other", skipped or rejected
    # (each cost an answer); None: as many as `labeled`.
    answers: int | None = None

    @property
    def spent(self) -> int:
        return self.labeled if self.answers is None else self.answers


class StoppingCriterion(ABC):
    @abstractmethod
    def stop(self, progress: Progress) -> str | None:
        """Why the campaign should stop now, for people to read; None to go on."""


@dataclass(frozen=True)
class StablePredictions(StoppingCriterion):
    """Stabilizing predictions (Bloodgood and Vijay-Shanker, 2009): stop once consecutive
    models agree on at least `min_agreement` of a fixed set of unlabeled images, in
    `patience` rounds in a row. A round that measured no agreement breaks the row."""

    min_agreement: float
    patience: int

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(
                f"patience={self.patience}: at least 1 round; to never stop on agreement, "
                "leave this criterion out"
            )

    def stop(self, progress: Progress) -> str | None:
        streak = 0
        for share in reversed(progress.agreements):
            if share is None or share < self.min_agreement:
                break
            streak += 1
        if streak < self.patience:
            return None
        return f"predictions stable: agreement {progress.agreements[-1]:.3f} for {streak} rounds"


@dataclass(frozen=True)
class LabelBudget(StoppingCriterion):
    """Stop once the answers spent (labels, and "other", skipped or rejected images) and
    those still awaited (they will be paid for) reach `budget`."""

    budget: int

    def stop(self, progress: Progress) -> str | None:
        if progress.spent + progress.waiting < self.budget:
            return None
        reason = f"label budget of {self.budget} spent"
        parts = []
        if progress.spent > progress.labeled:
            not_labeled = progress.spent - progress.labeled
            parts.append(f"{not_labeled} answered other, skipped or rejected")
        if progress.waiting:
            parts.append(f"{progress.waiting} still queued")
        if parts:
            reason += f" ({progress.labeled} labeled, {', '.join(parts)})"
        return reason


def campaign_criteria(rule: CampaignConfig) -> list[StoppingCriterion]:
    """The criteria of `campaign.*`, in the order they are asked: stable predictions
    (none with `stop_patience=0`), then the label budget."""
    criteria: list[StoppingCriterion] = []
    if rule.stop_patience > 0:
        criteria.append(StablePredictions(rule.stop_agreement, rule.stop_patience))
    return [*criteria, LabelBudget(rule.budget)]


def stop_reason(criteria: Sequence[StoppingCriterion], progress: Progress) -> str | None:
    """The first criterion's reason to stop; None if none says stop."""
    return next((reason for c in criteria if (reason := c.stop(progress)) is not None), None)


@dataclass(frozen=True)
class Agreement:
    """How far two models' predictions on the stop set agree."""

    share: float  # of the images compared, those both models put in the same class
    images: int  # images compared


def agreement(
    before: Sequence[str | None], now: Sequence[str | None], left_out: Sequence[bool]
) -> Agreement | None:
    """The agreement of two models' predicted classes, aligned per stop-set image (None
    where a model had no image to predict), over the images both predicted and
    `left_out` does not mark (images labeled since the set was drawn: a model agrees with
    the labels it was trained on); None if no image is left to compare."""
    compared = [
        (b, n)
        for b, n, out in zip(before, now, left_out, strict=True)
        if not out and b is not None and n is not None
    ]
    if not compared:
        return None
    return Agreement(sum(b == n for b, n in compared) / len(compared), len(compared))
