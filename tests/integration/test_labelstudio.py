"""The Label Studio round trip against a real server (see tests/labelstudio_server.py).

Every integration test makes its own pool under the server's local-files root and its own
project. The API checks talk to Label Studio directly over HTTP, as an annotator's browser
would; only activelearn.labeling.labelstudio uses the SDK.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import pytest

from activelearn.config import LabelingConfig
from activelearn.core.faults import VARIABLE
from activelearn.errors import (
    LabelStudioAuthError,
    LabelStudioError,
)
from activelearn.labeling.answers import (
    ACCEPTED,
    DELETED,
    DISAGREEMENT,
    EXCLUDED,
    OPEN,
    REQUEUED,
    SKIPPED,
    UNKNOWN_LABEL,
    apply_answers,
    labeled_name,
)
from activelearn.labeling.labelstudio import (
    TOKEN_ENV,
    LabelStudioAnnotator,
    free_port,
    label_config,
)
from activelearn.labeling.labelstudio.label_config import (
    choices_of,
)
from activelearn.labeling.labelstudio.server import PASSWORD_ENV, USERNAME_ENV, port_is_busy
from activelearn.workspace.layout import PROJECT_ROOT
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem, read_queue, write_queue
from tests.helpers import CLASSES, choice, write_class_folders

OTHER = LabelingConfig().other_label  # the labeling config's choice for no class

pytest_plugins = ["tests.labelstudio_server"]


@dataclass
class Campaign:
    """One test's pool, workspace, annotator and an HTTP client acting as annotator."""

    annotator: LabelStudioAnnotator
    pool: Path
    workspace: Path
    http: httpx.Client
    truth: dict[str, str]  # sample id -> class (its folder)

    @property
    def project_id(self) -> int:
        return json.loads(Path(self.annotator.state_path).read_text())["project_id"]

    def tasks(self, **params) -> list[dict]:
        params = {"project": self.project_id, "fields": "all", "page_size": 1000, **params}
        return self.http.get("/api/tasks", params=params).raise_for_status().json()["tasks"]

    def task_ids(self) -> dict[str, int]:
        return {t["data"]["sample_id"]: t["id"] for t in self.tasks(fields="task_only")}

    def annotate(self, task_id: int, label: str | None, ground_truth: bool = False) -> int:
        """Submit an answer (a reviewer's ground truth if asked); None cancels (skips) the
        task. Returns the annotation id."""
        body = (
            {"result": [], "was_cancelled": True}
            if label is None
            else {"result": choice(label), "was_cancelled": False, "lead_time": 2.0}
        )
        body["ground_truth"] = ground_truth
        response = self.http.post(f"/api/tasks/{task_id}/annotations/", json=body)
        return response.raise_for_status().json()["id"]

    def annotate_many(self, answers: dict[int, str]) -> None:
        """Several annotators at once: {task id: label}."""
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.annotate, answers, answers.values()))

    def next_task(self) -> dict:
        return self.http.get(f"/api/projects/{self.project_id}/next").raise_for_status().json()

    def project(self) -> dict:
        return self.http.get(f"/api/projects/{self.project_id}").raise_for_status().json()


@pytest.fixture
def campaign(labelstudio, tmp_path, request) -> Iterator[Campaign]:
    pool = labelstudio.new_pool_dir(f"pool-{request.node.name}")
    write_class_folders(pool, per_class=17)  # 51 images
    truth = {p.relative_to(pool).as_posix(): p.parent.name for p in sorted(pool.rglob("*.png"))}
    settings = LabelingConfig(
        kind="labelstudio",
        url=labelstudio.url,
        project_title=request.node.name,
        state_file=str(tmp_path / "rounds" / "labelstudio.json"),
    )
    annotator = LabelStudioAnnotator(settings, CLASSES, pool, token=labelstudio.token)
    headers = {"Authorization": f"Token {labelstudio.token}"}
    with httpx.Client(base_url=labelstudio.url, headers=headers, timeout=60) as http:
        yield Campaign(annotator, pool, tmp_path, http, truth)


def make_queue(
    sample_ids: list[str],
    truth: dict[str, str],
    seed: int = 0,
    confidence_range: tuple[float, float] = (0.34, 0.98),
) -> list[QueueItem]:
    """A least-confidence queue: rank 1 = lowest confidence. Returned SHUFFLED, so task ids
    (import order) say nothing about the ranking Label Studio must reproduce."""
    rng = np.random.default_rng(seed)
    confidences = rng.permutation(np.linspace(*confidence_range, len(sample_ids)))
    order = np.argsort(confidences)
    items = []
    for rank, index in enumerate(order, start=1):
        sid = sample_ids[index]
        right = rng.random() < 0.7
        predicted = truth[sid] if right else next(c for c in CLASSES if c != truth[sid])
        conf = float(confidences[index])
        items.append(
            QueueItem(sid, rank, predicted, conf, 1 - conf, {"least_confidence": 1 - conf})
        )
    shuffled = list(items)
    rng.shuffle(shuffled)
    return shuffled


def by_rank(queue: list[QueueItem]) -> list[QueueItem]:
    return sorted(queue, key=lambda item: item.rank)


KILLED_PUSH = """
import json, sys
from activelearn.config import LabelingConfig
from activelearn.core.faults import VARIABLE
from activelearn.labeling.labelstudio import LabelStudioAnnotator
from activelearn.workspace.queue import read_queue

settings, classes, pool, queue = json.loads(sys.argv[1])
LabelStudioAnnotator(LabelingConfig(**settings), classes, pool).push(1, read_queue(queue))
"""


class FaultyServer(http.server.ThreadingHTTPServer):
    """Answers every request with 503, or too slowly, counting the requests."""

    daemon_threads = True

    def __init__(self, mode: str):
        self.mode, self.hits = mode, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def reply(self):
                server.hits += 1
                if server.mode == "slow":
                    time.sleep(1.0)
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"detail": "Service Unavailable"}')

            do_GET = do_POST = do_PATCH = reply  # noqa: N815 (http.server names)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def faulty_server():
    """Start a FaultyServer in `mode`; yields (server, url)."""
    servers = []

    def start(mode: str) -> tuple[FaultyServer, str]:
        server = FaultyServer(mode)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def flaky_annotator(url: str, tmp_path: Path, project_id: int | None) -> LabelStudioAnnotator:
    state = tmp_path / "state.json"
    if project_id is not None:
        state.write_text(json.dumps({"project_id": project_id}))
    settings = LabelingConfig(url=url, state_file=str(state), retries=2, backoff=0.05, timeout=0.3)
    return LabelStudioAnnotator(settings, CLASSES, tmp_path / "pool", token="t" * 40)


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_push_serves_most_uncertain_first(campaign, tmp_path):
    sample_ids = sorted(campaign.truth)[:50]
    write_queue(tmp_path / "rounds/1/queue.jsonl", make_queue(sample_ids, campaign.truth))
    queue = read_queue(tmp_path / "rounds/1/queue.jsonl")
    campaign.annotator.push(1, queue)

    project = campaign.project()
    assert project["sampling"] == "Uncertainty sampling"
    assert project["model_version"] == "round-1"
    assert f'<Choice value="{CLASSES[2]}"/>' in project["label_config"]

    tasks = campaign.tasks()
    assert len(tasks) == 50
    items = {item.sample_id: item for item in queue}
    for task in tasks:
        item = items[task["data"]["sample_id"]]
        assert task["data"]["round"] == 1
        assert task["data"]["rank"] == item.rank
        assert task["data"]["uncertainty"] == pytest.approx(item.score)
        assert (
            task["data"]["image"] == f"/data/local-files/?d={campaign.pool.name}/{item.sample_id}"
        )
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "round-1"
        assert prediction["score"] == pytest.approx(item.confidence)
        assert prediction["result"] == choice(item.predicted)

    # The campaign state records every task id (and nothing secret).
    state = json.loads(Path(campaign.annotator.state_path).read_text())
    assert state["rounds"]["1"]["tasks"] == campaign.task_ids()

    # The pool is served by reference, not copied.
    image = campaign.http.get(tasks[0]["data"]["image"])
    assert image.status_code == 200
    assert image.content == (campaign.pool / tasks[0]["data"]["sample_id"]).read_bytes()

    # "Label All Tasks": most uncertain first, each answered before asking for the next.
    expected = [item.sample_id for item in by_rank(queue)]
    served = []
    for _ in range(10):
        task = campaign.next_task()
        served.append(task["data"]["sample_id"])
        campaign.annotate(task["id"], campaign.truth[task["data"]["sample_id"]])
    assert served == expected[:10]

    # "Label Tasks As Displayed": the round's view lists them in the same order.
    views = campaign.http.get("/api/dm/views/", params={"project": campaign.project_id}).json()
    (view,) = [v for v in views if v["data"]["title"] == "round 1"]
    listed = campaign.tasks(view=view["id"], fields="task_only")
    assert [t["data"]["sample_id"] for t in listed] == expected

    # Pushing the same queue again adds nothing.
    campaign.annotator.push(1, queue)
    again = campaign.tasks()
    assert len(again) == 50
    assert sum(len(t["predictions"]) for t in again) == 50


def test_ingest_votes_rejects_and_loses_nothing(campaign, labelstudio, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sample_ids = sorted(campaign.truth)[:50]
    queue = make_queue(sample_ids, campaign.truth)
    manifest_path = tmp_path / "data" / "manifest.csv"
    manifest = Manifest(manifest_path)
    for sid in campaign.truth:
        manifest.set_state(sid, "pool")
    for item in queue:
        manifest.set_state(item.sample_id, "queued", round=1)
    manifest.save()
    campaign.annotator.push(1, queue)
    ids = campaign.task_ids()

    ranked = [item.sample_id for item in by_rank(queue)]
    cancelled, unknown, split, majority, deleted = ranked[:5]
    still_open = ranked[-3:]
    other = {sid: next(c for c in CLASSES if c != campaign.truth[sid]) for sid in ranked}
    campaign.annotate_many({ids[sid]: campaign.truth[sid] for sid in ranked[5:-3]})
    campaign.annotate(ids[cancelled], None)
    campaign.annotate(ids[unknown], "zebra")
    campaign.annotate(ids[split], campaign.truth[split])  # two annotators disagree
    campaign.annotate(ids[split], other[split])
    for label in (campaign.truth[majority], other[majority], campaign.truth[majority]):
        campaign.annotate(ids[majority], label)  # 2 of 3 agree
    campaign.http.delete(f"/api/tasks/{ids[deleted]}/").raise_for_status()

    round_dir = tmp_path / "rounds" / "1"
    answers = campaign.annotator.collect(1, queue, round_dir)

    raw = json.loads((round_dir / "annotations.raw.json").read_text())
    assert len(raw) == 49  # every task that exists, annotated or not
    assert len(answers) == 50
    status = {a.sample_id: a for a in answers}
    accepted = ranked[5:-3] + [majority]
    for sid in accepted:
        assert (status[sid].status, status[sid].label) == (ACCEPTED, campaign.truth[sid])
    assert status[cancelled].status == SKIPPED
    assert status[unknown].status == UNKNOWN_LABEL
    assert f"task {ids[unknown]}" in status[unknown].detail and "'zebra'" in status[unknown].detail
    assert status[split].status == REQUEUED
    assert status[deleted].status == DELETED and str(ids[deleted]) in status[deleted].detail
    assert {sid: status[sid].status for sid in still_open} == dict.fromkeys(still_open, OPEN)

    report = json.loads((round_dir / "labelstudio_report.json").read_text())
    assert report["counts"] == {
        ACCEPTED: 43,
        DELETED: 1,
        OPEN: 3,
        REQUEUED: 1,
        SKIPPED: 1,
        UNKNOWN_LABEL: 1,
    }
    # Two tasks with several votes: 0 of 1 pair agrees, 1 of 3 pairs agrees.
    assert report["agreement"] == {
        "tasks_with_several_annotations": 2,
        "pairwise": 0.25,
        "unanimous_share": 0.0,
    }
    (listed,) = report["disagreements"]
    assert listed["sample_id"] == split
    assert listed["votes"] == {campaign.truth[split]: 1, other[split]: 1}
    assert report["unknown_labels"][0]["sample_id"] == unknown
    assert [d["sample_id"] for d in report["deleted"]] == [deleted]

    raw_dir = tmp_path / "data" / "raw"
    counts = apply_answers(answers, Manifest.load(manifest_path), campaign.pool, raw_dir, 1)
    assert counts[ACCEPTED] == 43
    copied = sorted(p.relative_to(raw_dir).as_posix() for p in raw_dir.rglob("*.png"))
    assert copied == sorted(f"{campaign.truth[s]}/{labeled_name(s)}" for s in accepted)
    for sid in accepted:
        target = raw_dir / campaign.truth[sid] / labeled_name(sid)
        assert target.read_bytes() == (campaign.pool / sid).read_bytes()
    after = Manifest.load(manifest_path)
    states = Counter(s.state for s in after.samples.values())
    assert states == {"labeled": 43, "rejected": 1, "pool": 3, "queued": 4}  # 1 never queued
    assert after.samples[majority].label == campaign.truth[majority]
    assert "zebra" in after.samples[unknown].reason
    assert after.samples[cancelled].state == after.samples[deleted].state == "pool"

    # Push and ingest again: no new task, no new export, nothing changes on disk.
    files_before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    campaign.annotator.push(1, queue)
    assert len(campaign.tasks(fields="task_only")) == 49
    again = campaign.annotator.collect(1, queue, round_dir)
    assert again == answers
    apply_answers(again, Manifest.load(manifest_path), campaign.pool, raw_dir, 1)
    files_after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert files_after == files_before

    # The token is in no file we wrote, no log line, and not in the server's log.
    token = labelstudio.token.encode()
    assert not [p for p, content in files_after.items() if token in content]
    assert labelstudio.token not in caplog.text
    assert token not in labelstudio.server.log_file.read_bytes()

    # The same answers under the config's strict policies: one dissent rejects, a skip excludes.
    strict = LabelStudioAnnotator(
        replace(campaign.annotator.settings, vote="unanimous", skipped="exclude"),
        CLASSES,
        campaign.pool,
        token=labelstudio.token,
    )
    judged = {a.sample_id: a.status for a in strict.collect(1, queue, tmp_path / "strict")}
    assert judged[majority] == DISAGREEMENT and judged[cancelled] == EXCLUDED
    assert [judged[sid] for sid in ranked[5:-3]] == [ACCEPTED] * len(ranked[5:-3])


def test_a_ground_truth_answer_decides(campaign):
    starred_later, starred_first = sorted(campaign.truth)[:2]
    queue = make_queue([starred_later, starred_first], campaign.truth)
    campaign.annotator.push(1, queue)
    ids = campaign.task_ids()
    right = campaign.truth
    wrong = {sid: next(c for c in CLASSES if c != right[sid]) for sid in right}
    # Two annotators disagree; a reviewer then stars the right one as ground truth.
    campaign.annotate(ids[starred_later], wrong[starred_later])
    starred = campaign.annotate(ids[starred_later], right[starred_later])
    star = campaign.http.patch(f"/api/annotations/{starred}/", json={"ground_truth": True})
    assert star.raise_for_status().json()["ground_truth"]
    # A ground truth first, then a majority against it.
    campaign.annotate(ids[starred_first], right[starred_first], ground_truth=True)
    for _ in range(2):
        campaign.annotate(ids[starred_first], wrong[starred_first])

    answers = campaign.annotator.collect(1, queue, campaign.workspace / "rounds" / "1")

    assert {a.sample_id: (a.status, a.label) for a in answers} == {
        sid: (ACCEPTED, right[sid]) for sid in (starred_later, starred_first)
    }
    assert all("(ground truth)" in a.detail for a in answers)


def test_next_round_ranks_open_tasks_by_the_new_model(campaign, caplog):
    sample_ids = sorted(campaign.truth)
    queue1 = make_queue(sample_ids[:50], campaign.truth, seed=1)
    campaign.annotator.push(1, queue1)
    ids = campaign.task_ids()
    answered = [item.sample_id for item in by_rank(queue1)[:10]]
    campaign.annotate_many({ids[sid]: campaign.truth[sid] for sid in answered})

    open_ids = [item.sample_id for item in queue1 if item.sample_id not in answered]
    # A different grid than round 1's, so no two scores tie.
    rescored = make_queue(open_ids, campaign.truth, seed=2, confidence_range=(0.2, 0.9))
    not_rescored = {item.sample_id: item for item in rescored[:5]}  # keep their last score
    new_item = QueueItem(sample_ids[50], 1, "class1", 0.5, 0.5)
    with caplog.at_level(logging.WARNING, logger="activelearn.labeling.labelstudio"):
        campaign.annotator.push(2, [new_item], rescored=rescored[5:])
    assert "5 open task(s)" in caplog.text

    assert campaign.project()["model_version"] == "round-2"
    round1 = {item.sample_id: item for item in queue1}
    fresh = {item.sample_id: item for item in rescored[5:]}
    expected_score = {}
    for task in campaign.tasks():
        sid = task["data"]["sample_id"]
        tags = [p["model_version"] for p in task["predictions"]]
        if sid in answered:
            assert tags == ["round-1"]
            continue
        if sid == new_item.sample_id:
            assert tags == ["round-2"]
            expected_score[sid] = new_item.confidence
            continue
        assert sorted(tags) == ["round-1", "round-2"]
        (p2,) = [p for p in task["predictions"] if p["model_version"] == "round-2"]
        source = fresh.get(sid) or round1[sid]
        assert sid in fresh or sid in not_rescored
        assert p2["score"] == pytest.approx(source.confidence)
        expected_score[sid] = source.confidence

    # The whole open queue, old and new, is served by the round-2 scores.
    expected = sorted(expected_score, key=expected_score.get)
    served = []
    for _ in range(5):
        task = campaign.next_task()
        served.append(task["data"]["sample_id"])
        campaign.annotate(task["id"], campaign.truth[task["data"]["sample_id"]])
    assert served == expected[:5]


def test_project_settings_are_put_back(campaign, labelstudio, caplog):
    sids = sorted(campaign.truth)[:4]
    campaign.annotator.push(1, make_queue(sids, campaign.truth))
    edited = label_config(CLASSES, OTHER).replace('"class0"', '"kitty"')
    campaign.http.patch(
        f"/api/projects/{campaign.project_id}", json={"label_config": edited}
    ).raise_for_status()  # someone renames a class in the UI
    two_answers = replace(campaign.annotator.settings, annotations_per_task=2)
    annotator = LabelStudioAnnotator(two_answers, CLASSES, campaign.pool, token=labelstudio.token)
    with caplog.at_level(logging.WARNING):
        annotator.push(1, make_queue(sids, campaign.truth))
    project = campaign.project()
    assert project["label_config"].strip() == label_config(CLASSES, OTHER).strip()
    assert choices_of(project["label_config"]) == CLASSES
    assert project["maximum_annotations"] == 2
    assert "offered the choices ['kitty', 'class1', 'class2']" in caplog.text


def test_another_campaigns_project_is_refused(campaign, labelstudio, tmp_path):
    # As after a restart with another data dir on the same URL: the recorded project id
    # is another campaign's project there.
    other = replace(campaign.annotator.settings, state_file=str(tmp_path / "other.json"))
    theirs = LabelStudioAnnotator(other, CLASSES, campaign.pool, token=labelstudio.token)
    their_project = theirs.ensure_project()
    queue = make_queue(sorted(campaign.truth)[:4], campaign.truth)
    campaign.annotator.push(1, queue)
    campaign.annotate_many({task_id: "class0" for task_id in campaign.task_ids().values()})
    state_path = Path(campaign.annotator.state_path)
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(state | {"project_id": their_project}))
    before = state_path.read_bytes()
    round_dir = tmp_path / "rounds" / "2"

    with pytest.raises(LabelStudioError, match=f"project {their_project} .* another campaign"):
        campaign.annotator.collect(1, queue, round_dir)
    with pytest.raises(LabelStudioError, match="another campaign"):
        campaign.annotator.push(2, queue)

    assert not round_dir.exists()  # no export, no report: nothing counted as deleted
    assert state_path.read_bytes() == before
    assert campaign.http.get(f"/api/projects/{their_project}").json()["task_number"] == 0


def test_a_project_made_before_claims_is_claimed(campaign):
    queue = make_queue(sorted(campaign.truth)[:2], campaign.truth)
    campaign.annotator.push(1, queue)
    state_path = Path(campaign.annotator.state_path)
    state = json.loads(state_path.read_text())
    del state["project_claim"]  # as an older version wrote it, and its project
    state_path.write_text(json.dumps(state))
    edited = {"description": "digits, second batch"}
    campaign.http.patch(f"/api/projects/{campaign.project_id}", json=edited).raise_for_status()

    answers = campaign.annotator.collect(1, queue, campaign.workspace / "rounds" / "2")

    assert [a.status for a in answers] == [OPEN, OPEN]
    claim = json.loads(state_path.read_text())["project_claim"]
    description = campaign.project()["description"]
    assert description == f"digits, second batch\nactivelearn campaign claim {claim}"


def test_a_deleted_project_is_replaced(campaign):
    queue = make_queue(sorted(campaign.truth)[:4], campaign.truth)
    campaign.annotator.push(1, queue)
    deleted = campaign.project_id
    campaign.http.delete(f"/api/projects/{deleted}/").raise_for_status()
    round_dir = campaign.workspace / "rounds" / "2"
    state_path = Path(campaign.annotator.state_path)

    with pytest.raises(LabelStudioError, match=f"if it was deleted, remove {state_path}"):
        campaign.annotator.collect(1, queue, round_dir)
    state_path.unlink()  # as the error says
    answers = campaign.annotator.collect(1, queue, round_dir)
    assert [a.status for a in answers] == [DELETED] * 4  # back to the pool, reported:
    report = json.loads((round_dir / "labelstudio_report.json").read_text())
    assert report["counts"] == {DELETED: 4}
    next_queue = make_queue(sorted(campaign.truth)[4:7], campaign.truth)
    campaign.annotator.push(2, next_queue)
    assert campaign.project_id != deleted
    assert len(campaign.tasks(fields="task_only")) == 3


def test_more_answers_per_task_asked_before_ingest(campaign, labelstudio):
    queue = make_queue(sorted(campaign.truth)[:3], campaign.truth)
    campaign.annotator.push(1, queue)
    ids = campaign.task_ids()
    campaign.annotate_many({ids[item.sample_id]: campaign.truth[item.sample_id] for item in queue})
    two_answers = replace(campaign.annotator.settings, annotations_per_task=2)
    annotator = LabelStudioAnnotator(two_answers, CLASSES, campaign.pool, token=labelstudio.token)
    round_dir = campaign.workspace / "rounds" / "2"

    assert [a.status for a in annotator.collect(1, queue, round_dir)] == [OPEN] * 3
    assert campaign.project()["maximum_annotations"] == 2
    assert not any(t["is_labeled"] for t in campaign.tasks(fields="task_only"))  # served again
    campaign.annotate_many({ids[item.sample_id]: campaign.truth[item.sample_id] for item in queue})
    assert [a.status for a in annotator.collect(1, queue, round_dir)] == [ACCEPTED] * 3


def test_an_answer_changed_after_ingest_is_reported(campaign, labelstudio, caplog):
    """Annotations changed in Label Studio after the round that ingested them: the labeled
    set keeps what was ingested (later rounds trained on it), and the next collect reports
    what Label Studio says now, until the sample is relabeled by hand."""
    corrected, skipped_later, starred, kept, new = sorted(campaign.truth)[:5]
    rejecting = replace(campaign.annotator.settings, on_disagreement="reject")
    campaign.annotator = LabelStudioAnnotator(
        rejecting, CLASSES, campaign.pool, token=labelstudio.token
    )
    right = campaign.truth
    wrong = {sid: next(c for c in CLASSES if c != right[sid]) for sid in right}
    manifest = Manifest(campaign.workspace / "data" / "manifest.csv")
    for sid in campaign.truth:
        manifest.set_state(sid, "pool")
    queue = make_queue([corrected, skipped_later, starred, kept], campaign.truth)
    for item in queue:
        manifest.set_state(item.sample_id, "queued", round=1)
    manifest.save()
    campaign.annotator.push(1, queue)
    ids = campaign.task_ids()
    annotation = {sid: campaign.annotate(ids[sid], right[sid]) for sid in ids}
    campaign.annotate(ids[starred], wrong[starred])  # a disagreement: rejected
    raw_dir = campaign.workspace / "data" / "raw"
    answers = campaign.annotator.collect(1, queue, campaign.workspace / "rounds" / "2")
    counts = apply_answers(answers, manifest, campaign.pool, raw_dir, 1)
    assert counts == {ACCEPTED: 3, DISAGREEMENT: 1}

    # After the ingest: one answer corrected, one replaced by a skip, one disagreement
    # settled by a reviewer's ground truth.
    campaign.http.patch(
        f"/api/annotations/{annotation[corrected]}/", json={"result": choice(wrong[corrected])}
    ).raise_for_status()
    campaign.http.delete(f"/api/annotations/{annotation[skipped_later]}/").raise_for_status()
    campaign.annotate(ids[skipped_later], None)
    campaign.http.patch(
        f"/api/annotations/{annotation[starred]}/", json={"ground_truth": True}
    ).raise_for_status()
    manifest.set_state(new, "queued", round=2)
    manifest.save()
    queue2 = make_queue([new], campaign.truth)
    campaign.annotator.push(2, queue2)
    round_dir = campaign.workspace / "rounds" / "3"

    def collect_round_2() -> dict[str, dict]:
        answered = [s for s in manifest.samples.values() if s.state in ("labeled", "rejected")]
        answers = campaign.annotator.collect(2, queue2, round_dir, answered)
        assert [a.status for a in answers] == [OPEN]
        report = json.loads((round_dir / "labelstudio_report.json").read_text())
        return {change.pop("sample_id"): change for change in report["late_changes"]}

    with caplog.at_level(logging.WARNING, logger="activelearn.labeling.labelstudio"):
        changes = collect_round_2()

    details = {sid: change.pop("detail") for sid, change in changes.items()}
    assert changes == {
        corrected: {
            "queued_round": 1,
            "ingested_label": right[corrected],
            "label_studio_label": wrong[corrected],
            "label_studio_status": ACCEPTED,
        },
        skipped_later: {
            "queued_round": 1,
            "ingested_label": right[skipped_later],
            "label_studio_label": None,
            "label_studio_status": SKIPPED,
        },
        starred: {
            "queued_round": 1,
            "ingested_label": None,
            "label_studio_label": right[starred],
            "label_studio_status": ACCEPTED,
        },
    }
    assert details[corrected].startswith(f"task {ids[corrected]}:")
    assert "3 answer(s) ingested in earlier rounds" in caplog.text
    assert str(round_dir / "labelstudio_report.json") in caplog.text
    # Nothing was relabeled on the way.
    after = Manifest.load(manifest.path)
    assert after.samples[corrected].label == right[corrected]
    assert after.samples[starred].state == "rejected"
    assert (raw_dir / right[corrected] / labeled_name(corrected)).is_file()

    # Relabeled by hand (the README's steps; the comparison reads the manifest's label):
    # no longer a change.
    manifest.set_state(corrected, "labeled", round=1, label=wrong[corrected])
    manifest.save()
    assert set(collect_round_2()) == {skipped_later, starred}


def test_a_second_choices_field_is_not_the_label(campaign):
    first, second = sids = sorted(campaign.truth)[:2]
    queue = make_queue(sids, campaign.truth)
    campaign.annotator.push(1, queue)
    quality = '<Choices name="quality" toName="image"><Choice value="ok"/></Choices></View>'
    edited = label_config(CLASSES, OTHER).replace("</View>", quality)
    campaign.http.patch(
        f"/api/projects/{campaign.project_id}", json={"label_config": edited}
    ).raise_for_status()  # someone adds an image quality field in the UI
    ok = {
        "from_name": "quality",
        "to_name": "image",
        "type": "choices",
        "value": {"choices": ["ok"]},
    }
    ids = campaign.task_ids()
    for sid, result in ((first, [ok, *choice(campaign.truth[first])]), (second, [ok])):
        body = {"result": result, "was_cancelled": False}
        campaign.http.post(f"/api/tasks/{ids[sid]}/annotations/", json=body).raise_for_status()

    answers = campaign.annotator.collect(1, queue, campaign.workspace / "rounds" / "2")

    status = {a.sample_id: (a.status, a.label) for a in answers}
    assert status[first] == (ACCEPTED, campaign.truth[first])
    assert status[second][0] == SKIPPED  # no class chosen
    campaign.annotator.push(2, make_queue(sorted(campaign.truth)[2:3], campaign.truth))
    assert campaign.project()["label_config"].strip() == edited.strip()  # their field kept


def test_a_project_made_by_a_killed_run_is_adopted(campaign, labelstudio, tmp_path):
    title = campaign.annotator.settings.project_title
    other = replace(campaign.annotator.settings, state_file=str(tmp_path / "other.json"))
    theirs = LabelStudioAnnotator(other, CLASSES, campaign.pool, token=labelstudio.token)
    their_project = theirs.ensure_project()  # another campaign, the same title
    queue_file = tmp_path / "rounds/1/queue.jsonl"
    write_queue(queue_file, make_queue(sorted(campaign.truth)[:6], campaign.truth))
    args = [asdict(campaign.annotator.settings), CLASSES, str(campaign.pool), str(queue_file)]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PUSH, json.dumps(args)],
        env=os.environ | {VARIABLE: "project:after-create", TOKEN_ENV: labelstudio.token},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILLed between create and save
    assert "project_id" not in json.loads(Path(campaign.annotator.state_path).read_text())
    projects = campaign.http.get("/api/projects", params={"title": title, "page_size": 100})
    made_by_the_kill = [p for p in projects.json()["results"] if p["title"] == title]
    (made,) = [p["id"] for p in made_by_the_kill if p["id"] != their_project]
    edited = {"title": "renamed in the UI", "label_config": label_config(["c0", "other"])}
    campaign.http.patch(f"/api/projects/{made}", json=edited).raise_for_status()

    campaign.annotator.push(1, read_queue(queue_file))  # the rerun

    assert campaign.project_id == made  # adopted by its claim, whatever its title now
    projects = campaign.http.get("/api/projects", params={"page_size": 1000}).json()["results"]
    alike = [p["id"] for p in projects if p["title"] in (title, edited["title"])]
    assert sorted(alike) == sorted([their_project, made])  # none made twice
    assert choices_of(campaign.http.get(f"/api/projects/{made}").json()["label_config"]) == CLASSES
    assert len(campaign.tasks(fields="task_only")) == 6
    assert campaign.http.get(f"/api/projects/{their_project}").json()["task_number"] == 0


def test_the_bench_on_a_server_deletes_only_its_projects(labelstudio):
    headers = {"Authorization": f"Token {labelstudio.token}"}
    http = httpx.Client(base_url=labelstudio.url, headers=headers, timeout=60)

    def bench_projects() -> list[int]:
        projects = http.get("/api/projects", params={"title": "bench", "page_size": 100})
        return [p["id"] for p in projects.json()["results"] if p["title"].startswith("bench ")]

    someones = http.post(
        "/api/projects", json={"title": "bench bulk", "label_config": label_config(CLASSES)}
    ).raise_for_status()  # the same title as the bench's own, made by someone else
    tmp = labelstudio.new_pool_dir("bench-tmp")  # the bench's pool must be under the root
    bench = subprocess.run(
        [sys.executable, "bench/labelstudio.py", "--url", labelstudio.url, "--tasks", "6"]
        + ["--one-by-one", "2"],
        cwd=Path(__file__).parents[2],
        env=os.environ | {"TMPDIR": str(tmp), TOKEN_ENV: labelstudio.token},
        capture_output=True,
        text=True,
    )
    assert bench.returncode == 0, bench.stderr
    assert "ratio push()" in bench.stdout
    assert bench_projects() == [someones.json()["id"]]


def test_wrong_token_names_the_variable(labelstudio, tmp_path):
    wrong = "f" * 40
    settings = LabelingConfig(url=labelstudio.url, state_file=str(tmp_path / "state.json"))
    annotator = LabelStudioAnnotator(settings, CLASSES, tmp_path / "pool", token=wrong)
    with pytest.raises(LabelStudioAuthError, match=TOKEN_ENV) as caught:
        annotator.push(1, [])
    assert wrong not in str(caught.value)
    assert labelstudio.token not in str(caught.value)
    state = tmp_path / "state.json"  # at most the claim saved before the create, no project
    assert not state.exists() or set(json.loads(state.read_text())) == {"project_claim"}


@pytest.mark.parametrize("mode", ["503", "slow"])
def test_transient_failures_are_retried_then_reported(tmp_path, faulty_server, mode):
    server, url = faulty_server(mode)
    annotator = flaky_annotator(url, tmp_path, project_id=1)  # first request: GET project
    with pytest.raises(LabelStudioError, match="after 3 attempts") as caught:
        annotator.push(1, [])
    assert url in str(caught.value)
    assert server.hits == 3


@pytest.mark.parametrize("mode", ["503", "slow"])  # a proxy's 5xx may come after the work
def test_a_create_without_answer_is_not_repeated(tmp_path, faulty_server, mode):
    server, url = faulty_server(mode)
    annotator = flaky_annotator(url, tmp_path, project_id=None)  # first request: create
    with pytest.raises(LabelStudioError, match="may have been done anyway, or still be in"):
        annotator.push(1, [])
    assert server.hits == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])  # `kill`, closed terminal
def test_serve_stops_label_studio_when_it_is_terminated(tmp_path, signum):
    port = free_port()
    credentials = {USERNAME_ENV: "a@b.c", PASSWORD_ENV: "p" * 8, TOKEN_ENV: "t" * 40}
    serve = subprocess.Popen(
        [sys.executable, "-m", "activelearn.labeling.labelstudio", "serve", "--port", str(port)]
        + ["--data-dir", str(tmp_path / "ls"), "--pool-dir", str(tmp_path / "pool")],
        cwd=PROJECT_ROOT,  # `-m` imports this checkout
        env=os.environ | credentials,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    label_studio = None  # the leader of its process group
    try:
        for line in serve.stdout:
            if line.startswith("Ctrl-C stops it"):
                break
        (label_studio,) = children(serve.pid)
        serve.send_signal(signum)
        serve.wait(60)
        with pytest.raises(ProcessLookupError):  # no orphan left holding the port
            os.killpg(label_studio, 0)
        assert not port_is_busy(port)
        assert serve.returncode == 0
    finally:
        serve.kill()
        serve.communicate()
        if label_studio is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(label_studio, signal.SIGKILL)
