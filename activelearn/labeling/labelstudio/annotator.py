"""`LabelStudioAnnotator`, the labeling side's Label Studio implementation (see
`activelearn.labeling`): `push` sends a round's queue as one bulk import with the model's
predictions and makes Label Studio serve it most uncertain first; `collect` exports the
project, keeps the raw export in the round folder, and turns every queued sample into one
`Answer` (majority vote, skips, unknown labels, deleted tasks) plus a report, which also
lists answers changed in Label Studio after they were ingested; a task whose answers
decide nothing is asked one more (`labeling.on_disagreement`).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import urllib.parse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from activelearn.config import LabelingConfig, OnDisagreement
from activelearn.core.faults import kill_point
from activelearn.core.files import write_atomic
from activelearn.errors import LabelStudioError
from activelearn.labeling.answers import DELETED, Answer
from activelearn.labeling.labelstudio.project import Project
from activelearn.labeling.labelstudio.state import CampaignState
from activelearn.labeling.labelstudio.tasks import (
    TaskOutcome,
    decide,
    late_changes,
    prediction,
    queue_outcomes,
    round_report,
    task_body,
    task_data,
    task_field,
)
from activelearn.labeling.labelstudio.transport import Transport
from activelearn.workspace.layout import round_tag
from activelearn.workspace.manifest import Sample
from activelearn.workspace.queue import QueueItem

log = logging.getLogger(__name__)


class LabelStudioAnnotator:
    """The `Annotator` for people labeling in Label Studio (one project per campaign).

    The project id, its pool storage, each round's view and task ids are kept in
    `settings.state_file` (no secrets). The API token comes from LABEL_STUDIO_API_KEY
    unless given, and is never logged or written.
    """

    def __init__(
        self,
        settings: LabelingConfig,
        class_names: Sequence[str],
        pool_dir: str | Path,
        *,
        token: str | None = None,
    ):
        if not class_names:
            raise LabelStudioError("Label Studio needs at least one class name")
        self.settings = settings
        self.class_names = list(class_names)
        self.pool_dir = Path(pool_dir).resolve()
        root = settings.document_root
        self.document_root = Path(root).resolve() if root else self.pool_dir.parent
        if not self.pool_dir.is_relative_to(self.document_root):
            raise LabelStudioError(
                f"labeling.document_root={root!r} does not contain the pool {self.pool_dir}: "
                "it must be the server's local-files root, a parent of the pool"
            )
        self.state_path = Path(settings.state_file)
        self.last_report: dict | None = None
        self.transport = Transport(settings, token=token)
        self.sdk = self.transport.sdk
        self.project = Project(
            self.transport, settings, self.class_names, self.pool_dir, self.state_path
        )
        self._decide = functools.partial(
            decide,
            class_names=self.class_names,
            vote=settings.vote,
            skipped=settings.skipped,
            annotations_per_task=settings.annotations_per_task,
            on_disagreement=settings.on_disagreement,
            other_label=settings.other_label or None,
        )

    def ensure_project(self) -> int:
        """The campaign's project id, created and recorded on first use (`Project.ensure`)."""
        return self.project.ensure(CampaignState.load(self.state_path))

    def image_url(self, sample_id: str) -> str:
        relative = (self.pool_dir / sample_id).relative_to(self.document_root).as_posix()
        return "/data/local-files/?d=" + urllib.parse.quote(relative)

    def task_payload(self, round: int, item: QueueItem, queue_length: int) -> dict:
        return task_body(round, item, queue_length, self.image_url(item.sample_id))

    def list_tasks(self, project_id: int) -> list:
        """Every task of the project: data and counters, without annotations and
        predictions (which would about double the cost)."""
        return self.transport.call(
            "listing tasks",
            lambda: list(
                self.sdk.tasks.list(project=project_id, fields="task_only", page_size=1000)
            ),
        )

    # ---- push

    def push(self, round: int, queue: list[QueueItem], rescored: Sequence[QueueItem] = ()) -> None:
        """Send the round's queue as one bulk import with predictions, then rank the open
        queue by this round's model.

        `rescored`: this round's model output for samples still open from earlier rounds;
        their tasks get this round's prediction from it. An open task missing from it keeps
        its latest prediction, re-tagged with this round (a warning says how many), since
        Label Studio only serves tasks with a prediction of the project's model version.
        Pushing the same queue again adds nothing; a task deleted in Label Studio is not
        re-created within its round.
        """
        state = CampaignState.load(self.state_path)
        project_id = self.project.ensure(state)
        recorded = state.round(round).tasks
        tasks = self.list_tasks(project_id)
        present = {(task_data(t).get("sample_id"), task_data(t).get("round")) for t in tasks}
        missing, gone = [], []
        for item in queue:
            if (item.sample_id, round) in present:
                continue
            (gone if item.sample_id in recorded else missing).append(item)
        if gone:
            log.warning(
                "%d task(s) of round %d were deleted in Label Studio and are not re-created "
                "(e.g. %s); `collect` reports them as deleted",
                len(gone),
                round,
                gone[0].sample_id,
            )
        for t in tasks:
            if task_data(t).get("round") == round:
                recorded[task_data(t)["sample_id"]] = t.id
        if missing:
            payload = [self.task_payload(round, item, len(queue)) for item in missing]
            imported = self._import_tasks(project_id, payload)
            kill_point("push:after-import")  # crash tests: tasks in, our state not yet
            if imported is None:  # ask Label Studio what arrived
                imported = {
                    task_data(t)["sample_id"]: t.id
                    for t in self.list_tasks(project_id)
                    if task_data(t).get("round") == round
                }
            recorded.update(imported)
            log.info("pushed %d task(s) of round %d to project %d", len(missing), round, project_id)
        state.round(round).view_id = self.project.ensure_view(project_id, round)
        state.save(self.state_path)
        self._repredict_open_tasks(project_id, round, tasks, rescored)
        self.project.rank_by(project_id, round)

    def _import_tasks(self, project_id: int, payload: list[dict]) -> dict[str, int] | None:
        """One bulk import; returns {sample id: task id}, or None when Label Studio did not
        say which tasks it made (editions that import in the background).

        Never retried automatically: after a timeout the server may still be importing,
        and tasks sent again then would be duplicates. A rerun imports only what is missing.
        """

        def attempt() -> dict[str, int] | None:
            response = self.sdk.projects.import_tasks(
                project_id, request=payload, return_task_ids=True
            )
            task_ids = task_field(response, "task_ids")
            if not task_ids or len(task_ids) != len(payload):
                return None
            return {p["data"]["sample_id"]: t for p, t in zip(payload, task_ids, strict=True)}

        return self.transport.call(f"importing {len(payload)} task(s)", attempt, idempotent=False)

    def _repredict_open_tasks(
        self, project_id: int, round: int, tasks: list, rescored: Sequence[QueueItem]
    ) -> None:
        """Give open tasks of earlier rounds a prediction tagged with this round (one bulk
        call): Label Studio's uncertainty sampling only serves tasks with a prediction of
        the project's model version."""
        tag = round_tag(round)
        open_tasks = {
            t.id: t
            for t in tasks
            if task_data(t).get("round", round) < round  # round 0 is a round too
            and not task_field(t, "is_labeled")
            and not task_field(t, "cancelled_annotations")
        }
        if not open_tasks:
            return
        by_task = defaultdict(list)
        for p in self.transport.call(
            "listing predictions",
            lambda: self.sdk.predictions.list(project=project_id),
        ):
            if p.task in open_tasks:
                by_task[p.task].append(p)
        fresh = {item.sample_id: item for item in rescored}
        new, carried = [], 0
        for task_id, t in open_tasks.items():
            predictions = by_task[task_id]
            if any(p.model_version == tag for p in predictions):
                continue
            item = fresh.get(task_data(t).get("sample_id"))
            if item is not None:
                predicted = prediction(round, item, len(rescored))
            elif predictions:
                latest = max(predictions, key=lambda p: p.id)
                predicted = {"model_version": tag, "score": latest.score, "result": latest.result}
                carried += 1
            else:
                continue
            new.append({"task": task_id, **predicted})
        if carried:
            log.warning(
                "%d open task(s) from earlier rounds were not rescored: their last prediction "
                "was carried over to %s (pass `rescored` to rank them by the current model)",
                carried,
                tag,
            )
        if new:
            self.transport.call(
                f"adding {tag} predictions to {len(new)} open task(s)",
                lambda: self.sdk.projects.import_predictions(project_id, request=new),
                idempotent=False,
            )

    # ---- collect

    def export_project(self, project_id: int) -> bytes:
        """Every task with its annotations (cancelled ones included), as Label Studio's
        JSON export."""
        return self.transport.call(
            "exporting annotations",
            lambda: b"".join(
                self.sdk.projects.exports.download_sync(
                    project_id, export_type="JSON", download_all_tasks=True
                )
            ),
        )

    def collect(
        self,
        round: int,
        queue: list[QueueItem],
        round_dir: Path,
        answered: Sequence[Sample] = (),
    ) -> list[Answer]:
        """One Answer per queued sample; the raw export is stored in `round_dir` first.

        Samples are matched to tasks by `sample_id` (this round's task when there is one,
        else the newest), so a queue may also hold samples still open from earlier rounds.
        With `on_disagreement=requeue`, each task whose answers decide nothing gets its
        overlap raised: Label Studio serves it to one more person (`_ask_more_answers`).
        The round report (counts, agreement, every non-accepted answer, and the `answered`
        samples Label Studio now decides otherwise) is written to
        `round_dir/labelstudio_report.json` and kept in `last_report`.
        """
        round_dir = Path(round_dir)
        state = CampaignState.load(self.state_path)
        project_id = state.project_id
        if project_id is None:  # removed after its project was deleted (`Project._get`)
            log.warning(
                "no Label Studio project recorded in %s: the %d image(s) still waiting for "
                "an answer go back to the pool",
                self.state_path,
                len(queue),
            )
            detail = f"no Label Studio project recorded in {self.state_path}"
            outcomes = [TaskOutcome(Answer(i.sample_id, DELETED, detail=detail)) for i in queue]
            return self._report(round, round_dir, None, outcomes)
        project = self.project.recorded(state)  # before anything is read or written
        self.project.keep_answers_per_task(project_id, project)
        export_file, tasks = self._read_answers(project_id, round_dir)
        pushed = state.pushed_tasks(round)
        outcomes = queue_outcomes(round, queue, tasks, pushed, self._decide)
        if self._ask_more_answers(tasks, outcomes):
            # That shows in the export (the tasks' `updated_at`): keep the export after it,
            # the one an ingest again reads, so that one keeps nothing new.
            export_file, tasks = self._read_answers(project_id, round_dir)
            outcomes = queue_outcomes(round, queue, tasks, pushed, self._decide)
            self._ask_more_answers(tasks, outcomes)
        changes = late_changes(tasks, answered, self._decide)
        return self._report(round, round_dir, export_file.name, outcomes, changes)

    def _read_answers(self, project_id: int, round_dir: Path) -> tuple[Path, list[dict]]:
        """The project's export, kept in `round_dir` first, and its tasks; with
        `on_disagreement=requeue` each task also gets its `overlap` (the people it waits
        for), which the export leaves out."""
        raw = self.export_project(project_id)
        export_file = keep_export(round_dir, raw)
        tasks = json.loads(raw)
        if self.settings.on_disagreement == OnDisagreement.requeue:
            overlaps = {t.id: task_field(t, "overlap") for t in self.list_tasks(project_id)}
            for task in tasks:
                task["overlap"] = overlaps.get(task["id"])
        return export_file, tasks

    def _ask_more_answers(self, tasks: list[dict], outcomes: list[TaskOutcome]) -> int:
        """Raise the overlap of each requeued task to the people it is to be answered by,
        so Label Studio serves it again (to someone who has not answered it), as a raised
        `annotations_per_task` does for the whole project; how many were raised. A task
        already asked is left alone, so an ingest again asks nothing more."""
        overlap = {task["id"]: task.get("overlap") for task in tasks}
        raised = 0
        for outcome in outcomes:
            task_id, wanted = outcome.task_id, outcome.overlap
            if wanted is None or overlap.get(task_id) == wanted:
                continue
            self.transport.call(
                f"raising the overlap of task {task_id} to {wanted}",
                lambda task_id=task_id, wanted=wanted: self.sdk.tasks.update(
                    str(task_id), overlap=wanted, is_labeled=False
                ),
            )
            log.info(
                "%s: its answers decide nothing, one more asked (%s)",
                outcome.answer.sample_id,
                outcome.answer.detail,
            )
            raised += 1
        return raised

    def _report(
        self,
        round: int,
        round_dir: Path,
        export_file: str | None,
        outcomes: list[TaskOutcome],
        changes: Sequence[dict] = (),
    ) -> list[Answer]:
        """Write the round report (kept in `last_report`), warn about late changes; the
        answers."""
        report = round_report(round, export_file, outcomes, changes)
        report_file = round_dir / "labelstudio_report.json"
        write_atomic(report_file, (json.dumps(report, indent=2) + "\n").encode())
        if changes:
            first = changes[0]
            log.warning(
                "%d answer(s) ingested in earlier rounds read differently in Label Studio now "
                "(e.g. %s: ingested %s, now %s); the labeled set keeps the ingested ones: see "
                "late_changes in %s, and the README on applying a correction by hand",
                len(changes),
                first["sample_id"],
                first["ingested_label"] or "as rejected",
                first["label_studio_label"] or first["label_studio_status"],
                report_file,
            )
        self.last_report = report
        log.info("answers to round %d's queue: %s (%s)", round, report["counts"], report_file)
        return [o.answer for o in outcomes]


def keep_export(round_dir: Path, raw: bytes) -> Path:
    """Store a raw export in the round folder, never overwriting an earlier one.

    The first is `annotations.raw.json`; a later export with different content goes to
    `annotations.raw.2.json`, `.3.json`...; an identical one is not stored twice.
    """
    for n in itertools.count(1):
        path = round_dir / ("annotations.raw.json" if n == 1 else f"annotations.raw.{n}.json")
        if not path.exists():
            write_atomic(path, raw)
            return path
        if path.stat().st_size == len(raw) and path.read_bytes() == raw:
            return path
