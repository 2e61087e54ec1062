"""Task logic without HTTP: a queued sample's task and prediction, the answer a task's
annotations give (`decide`: votes, skips, ground truth), the round report, and the
answers Label Studio now gives otherwise than they were ingested (`late_changes`).

Tasks come as Label Studio's JSON export (dicts) or as SDK models; `task_data` reads both.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from activelearn.labeling.answers import (
    ACCEPTED,
    DELETED,
    DISAGREEMENT,
    EXCLUDED,
    OPEN,
    OTHER,
    OUTCOME,
    REQUEUED,
    SKIPPED,
    UNKNOWN_LABEL,
    Answer,
    outcome_counts,
)
from activelearn.labeling.labelstudio.label_config import IMAGE_FIELD, LABEL_FIELD
from activelearn.workspace.layout import round_tag
from activelearn.workspace.manifest import Sample
from activelearn.workspace.queue import QueueItem


def task_field(task: Any, name: str) -> Any:
    """A field of an SDK model (declared or extra) or of a plain dict."""
    return task.get(name) if isinstance(task, dict) else getattr(task, name, None)


def task_data(task: Any) -> dict:
    return task_field(task, "data") or {}


# ---- what push sends


def prediction_score(item: QueueItem, queue_length: int) -> float:
    """Label Studio serves the lowest score first, so the score is the model's confidence.

    Without a model (cold start) the queue's rank stands in: rank 1 gets the lowest score.
    """
    if item.confidence is not None:
        return float(item.confidence)
    return item.rank / (queue_length + 1)


def prediction_result(label: str | None) -> list[dict]:
    if label is None:
        return []
    return [
        {
            "from_name": LABEL_FIELD,
            "to_name": IMAGE_FIELD,
            "type": "choices",
            "value": {"choices": [label]},
        }
    ]


def prediction(round: int, item: QueueItem, queue_length: int) -> dict:
    """The model's prediction for a queued sample, tagged with the round."""
    return {
        "model_version": round_tag(round),
        "score": prediction_score(item, queue_length),
        "result": prediction_result(item.predicted),
    }


def task_body(round: int, item: QueueItem, queue_length: int, image_url: str) -> dict:
    """A queued sample as a task to import, with its prediction."""
    return {
        "data": {
            IMAGE_FIELD: image_url,
            "sample_id": item.sample_id,
            "round": round,
            "rank": item.rank,
            "uncertainty": item.score,
        },
        "predictions": [prediction(round, item, queue_length)],
    }


# ---- what collect reads


def annotation_labels(annotation: dict) -> list[str]:
    """The classes chosen in one annotation (normally one), from our Choices only."""
    return [
        choice
        for region in annotation.get("result") or []
        if region.get("type") == "choices" and region.get("from_name") == LABEL_FIELD
        for choice in (region.get("value") or {}).get("choices") or []
    ]


@dataclass
class TaskOutcome:
    """One task's answer plus what the round report needs."""

    answer: Answer
    votes: list[str] = field(default_factory=list)
    task_id: int | None = None
    # REQUEUED: how many people the task is to be answered by, its overlap in Label
    # Studio: one more than had answered it when their answers last decided nothing
    overlap: int | None = None


def decide(
    task: dict,
    sample_id: str,
    class_names: Sequence[str],
    *,
    vote: str = "majority",
    skipped: str = "pool",
    annotations_per_task: int = 1,
    on_disagreement: str = "requeue",
    other_label: str | None = None,
) -> TaskOutcome:
    """Turn one exported task into an Answer.

    Cancelled annotations (and ones without a choice) do not vote. A label the project
    does not know rejects the task. One vote is the label; several are decided by `vote`:
    `majority` needs more than half of the votes, `unanimous` all of them. A task with
    fewer finished annotations than `annotations_per_task` is still open.

    Votes that decide nothing (a tie, a split) are a disagreement: rejected, or, with
    `on_disagreement="requeue"` under `majority`, REQUEUED: the task is to be answered by
    one more person than have answered it (`overlap`, Label Studio's count), and stays
    REQUEUED while it waits for them (the task's `overlap`, which Label Studio's task list
    has and its export lacks, says how many it waits for), so deciding again gives the
    same answer until the answer arrives. Under `unanimous` no further answer can outvote
    a dissent: rejected.

    An annotation marked ground truth (a reviewer's star in Label Studio, at most one per
    task there) is decisive: its label is the answer whatever the other votes say and
    however many there are; only its own label is checked. The other votes still count
    for the agreement report. Several ground truths that disagree are rejected.

    `other_label` (labeling.other_label) is a vote like a class; decided, it is an OTHER
    answer: the image is of none of the classes.
    """
    task_id = task.get("id")
    votes: list[str] = []
    ground_truth: list[str] = []
    cancelled = 0
    for annotation in task.get("annotations") or []:
        labels = annotation_labels(annotation)
        if annotation.get("was_cancelled") or not labels:
            cancelled += 1
            continue
        votes.append(labels[0])
        if annotation.get("ground_truth"):
            ground_truth.append(labels[0])
    deciding = ground_truth or votes
    known = set(class_names) | ({other_label} if other_label else set())
    unknown = sorted({label for label in deciding if label not in known})
    if unknown:
        return TaskOutcome(
            Answer(
                sample_id,
                UNKNOWN_LABEL,
                detail=f"task {task_id}: label {unknown[0]!r} is not one of the project's "
                f"classes {list(class_names)}",
            ),
            votes,
            task_id,
        )
    done = len(votes) + cancelled
    if not ground_truth and (done < annotations_per_task or not done):
        return TaskOutcome(
            Answer(
                sample_id, OPEN, detail=f"task {task_id}: {done} of {annotations_per_task} answers"
            ),
            votes,
            task_id,
        )
    if not votes:
        status = SKIPPED if skipped == "pool" else EXCLUDED
        return TaskOutcome(
            Answer(sample_id, status, detail=f"task {task_id}: cancelled ({cancelled}x)"),
            votes,
            task_id,
        )
    counts = Counter(deciding)
    (label, top), *_ = counts.most_common(1)
    # Several ground truths (Label Studio keeps one per task, an import may bring more)
    # must agree among themselves.
    policy = "ground truth" if ground_truth else vote
    agreed = 2 * top > len(deciding) if policy == "majority" else top == len(deciding)
    if agreed:
        detail = f"task {task_id}: {top} of {len(deciding)} ({policy})"
        if label == other_label:
            detail = f"answered {label!r}, {detail}"
            return TaskOutcome(Answer(sample_id, OTHER, detail=detail), votes, task_id)
        return TaskOutcome(Answer(sample_id, ACCEPTED, label, detail=detail), votes, task_id)
    summary = ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))
    detail = f"task {task_id}: votes {summary} ({policy})"
    if on_disagreement == "requeue" and policy == "majority":
        overlap = max(task.get("overlap") or 1, answerers(task) + 1)
        detail += f", {overlap} answers asked"
        return TaskOutcome(Answer(sample_id, REQUEUED, detail=detail), votes, task_id, overlap)
    return TaskOutcome(Answer(sample_id, DISAGREEMENT, detail=detail), votes, task_id)


def answerers(task: dict) -> int:
    """The people who answered a task, as Label Studio counts them against its overlap:
    the distinct authors of its annotations, skips included (the project's skip queue
    ignores skipped tasks). An annotation without an author counts as one person."""
    authors = set()
    for i, annotation in enumerate(task.get("annotations") or []):
        author = annotation.get("completed_by")
        if isinstance(author, dict):  # expanded, in some exports
            author = author.get("id")
        authors.add(("annotation", i) if author is None else author)
    return len(authors)


# `decide` with the campaign's classes and policies: (task, sample id) -> outcome
Decide = Callable[[dict, str], TaskOutcome]


def queue_outcomes(
    round: int,
    queue: Sequence[QueueItem],
    tasks: Sequence[dict],
    pushed: dict[str, tuple[int, int]],
    decide_task: Decide,
) -> list[TaskOutcome]:
    """One outcome per queued sample, from the exported `tasks`.

    A sample is matched to its tasks by `sample_id`: this round's task when there is one,
    else the newest, so a queue may also hold samples still open from earlier rounds.
    `pushed` gives the (round, task id) each sample was pushed as: when that task is not
    in the export, it was deleted in Label Studio.
    """
    by_sample: dict[str, list[dict]] = defaultdict(list)
    for task in tasks:
        sample = task_data(task).get("sample_id")
        if sample is not None:
            by_sample[sample].append(task)
    exported = {task.get("id") for task in tasks}
    outcomes = []
    for item in queue:
        candidates = by_sample.get(item.sample_id)
        expected = pushed.get(item.sample_id)
        if expected is not None and expected[1] not in exported:
            detail = f"task {expected[1]} (round {expected[0]}) was deleted in Label Studio"
            outcomes.append(TaskOutcome(Answer(item.sample_id, DELETED, detail=detail)))
        elif not candidates:
            answer = Answer(item.sample_id, OPEN, detail="not pushed to Label Studio")
            outcomes.append(TaskOutcome(answer))
        else:
            task = max(
                candidates,
                key=lambda t: (t["data"].get("round") == round, t["data"].get("round") or 0),
            )
            outcomes.append(decide_task(task, item.sample_id))
    return outcomes


def late_changes(
    tasks: Sequence[dict], answered: Sequence[Sample], decide_task: Decide
) -> list[dict]:
    """The answered samples whose task Label Studio now decides otherwise: a labeled
    sample now with another label, skipped or rejected, a rejected one now with a
    label. Each is matched to the task of the round it was queued in. A task deleted
    since, or open again (its annotations deleted, or more asked per task), gives no
    new answer, so it is no change.

    The labeled set keeps what was ingested (see `apply_answers`); these are reported
    so that a correction made in Label Studio is never lost silently.
    """
    task_of = {(task_data(t).get("sample_id"), task_data(t).get("round")): t for t in tasks}
    changes = []
    for sample in answered:
        task = task_of.get((sample.sample_id, sample.round))
        if task is None or sample.state not in ("labeled", "other", "rejected"):
            continue
        now = decide_task(task, sample.sample_id).answer
        if now.status == OPEN:
            continue
        if sample.state == "labeled":
            changed = (now.status, now.label) != (ACCEPTED, sample.label)
        elif sample.state == "other":
            changed = now.status != OTHER
        else:
            changed = now.status == ACCEPTED
        if changed:
            changes.append(
                {
                    "sample_id": sample.sample_id,
                    "queued_round": sample.round,
                    "ingested_label": sample.label,  # None: it was rejected
                    "label_studio_label": now.label,  # None: no label now
                    "label_studio_status": now.status,
                    "detail": now.detail,
                }
            )
    return changes


# ---- the round report


def agreement(vote_lists: Iterable[Sequence[str]]) -> dict[str, Any]:
    """Annotator agreement over tasks with two or more votes.

    `pairwise`: the share of annotation pairs on the same task that chose the same class
    (None without any such task); `unanimous_share`: the share of those tasks where all
    votes agree.
    """
    tasks = pairs = agreeing = unanimous = 0
    for votes in vote_lists:
        if len(votes) < 2:
            continue
        tasks += 1
        counts = Counter(votes)
        pairs += len(votes) * (len(votes) - 1) // 2
        agreeing += sum(n * (n - 1) // 2 for n in counts.values())
        unanimous += len(counts) == 1
    return {
        "tasks_with_several_annotations": tasks,
        "pairwise": round(agreeing / pairs, 4) if pairs else None,
        "unanimous_share": round(unanimous / tasks, 4) if tasks else None,
    }


def round_report(
    round: int,
    export_file: str | None,
    outcomes: Sequence[TaskOutcome],
    late_changes: Sequence[dict] = (),
) -> dict:
    """The report on the answers to round `round`'s queue (and to earlier ones still
    open), which the next round ingests: counts by status and by outcome, agreement,
    each answered image's outcome (`OUTCOME`: what the ingest makes of it; one removed
    from the pool meanwhile is rejected instead, with a warning), every answer that was
    not a plain acceptance, and the answers changed after their ingest (see
    `late_changes`). Disagreements list the rejected and the requeued ones."""
    answers = [o.answer for o in outcomes]
    listed = defaultdict(list)
    answered = []
    for outcome in outcomes:
        a = outcome.answer
        if a.status != OPEN:
            entry = {"sample_id": a.sample_id, "outcome": OUTCOME[a.status], "status": a.status}
            answered.append(entry | ({"label": a.label} if a.status == ACCEPTED else {}))
        if a.status != ACCEPTED:
            entry = {"sample_id": a.sample_id, "detail": a.detail}
            if outcome.votes:
                entry["votes"] = dict(sorted(Counter(outcome.votes).items()))
            listed[a.status].append(entry)
    counts = Counter(a.status for a in answers)
    return {
        "ingested_in_round": round + 1,  # a round ingests the answers to the queue before it
        "answers_to_round": round,
        "export": export_file,
        "queued": len(answers),
        "counts": dict(sorted(counts.items())),
        "outcomes": outcome_counts(counts),
        "agreement": agreement(o.votes for o in outcomes),
        "answered": answered,
        "disagreements": listed[DISAGREEMENT] + listed[REQUEUED],
        "unknown_labels": listed[UNKNOWN_LABEL],
        "other": listed[OTHER],
        "skipped": listed[SKIPPED] + listed[EXCLUDED],  # labeling.max_skips applies at ingest
        "deleted": listed[DELETED],
        "open": listed[OPEN],
        "late_changes": list(late_changes),
    }
