"""Answers that disagree are adjudicated (`labeling.on_disagreement=requeue`, the default):
the task is asked one more answer and its image stays queued until that answer decides
it; `reject` rejects it as before. The decision is pure (`decide`); the requeue is checked
against a real Label Studio (tests/labelstudio_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from PIL import Image

from activelearn.config import LabelingConfig
from activelearn.labeling.answers import (
    ACCEPTED,
    OPEN,
    REQUEUED,
    apply_answers,
)
from activelearn.labeling.labelstudio import LabelStudioAnnotator
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem

pytest_plugins = ["tests.labelstudio_server"]


CLASSES = ["cat", "dog", "fox"]


def choice(label: str) -> list[dict]:
    return [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    ]


def test_a_disagreement_is_asked_once_more_in_label_studio(labelstudio, tmp_path):
    """Two annotators disagree: the ingest raises the task's overlap by one, the image
    stays queued (and an ingest again asks nothing more); a third answer decides it."""
    pool = labelstudio.new_pool_dir("pool-disagreement")
    samples = ["a.png", "b.png"]
    for sid in samples:
        Image.new("L", (8, 8)).save(pool / sid)
    settings = LabelingConfig(
        kind="labelstudio",
        url=labelstudio.url,
        project_title="disagreement",
        state_file=str(tmp_path / "rounds" / "labelstudio.json"),
        annotations_per_task=2,
    )
    annotator = LabelStudioAnnotator(settings, CLASSES, pool, token=labelstudio.token)
    queue = [QueueItem(sid, rank, "cat", 0.5, 0.5) for rank, sid in enumerate(samples, 1)]
    manifest = Manifest(tmp_path / "data" / "manifest.csv")
    for sid in samples:
        manifest.set_state(sid, "queued", round=0)
    manifest.save()
    annotator.push(0, queue)
    project = json.loads(Path(settings.state_file).read_text())["project_id"]
    headers = {"Authorization": f"Token {labelstudio.token}"}
    http = httpx.Client(base_url=labelstudio.url, headers=headers, timeout=60)
    people = [  # three annotators of the organization
        http.post(
            "/api/users/",
            json={"email": f"{name}-{project}@example.com", "username": f"{name}-{project}"},
        )
        .raise_for_status()
        .json()["id"]
        for name in ("ann", "bob", "cyd")
    ]

    def tasks() -> dict[str, dict]:
        params = {"project": project, "fields": "task_only", "page_size": 100}
        listed = http.get("/api/tasks", params=params).raise_for_status().json()["tasks"]
        return {t["data"]["sample_id"]: t for t in listed}

    def annotate(sid: str, label: str, person: int) -> None:
        body = {"result": choice(label), "was_cancelled": False, "completed_by": person}
        http.post(f"/api/tasks/{tasks()[sid]['id']}/annotations/", json=body).raise_for_status()

    def ingest(round_dir: Path) -> dict[str, str]:
        answers = annotator.collect(0, queue, round_dir)
        apply_answers(answers, manifest, pool, tmp_path / "data" / "raw", round=0)
        return {a.sample_id: a.status for a in answers}

    before = tasks()
    assert before["a.png"]["overlap"] == 2
    annotate("a.png", "cat", people[0])  # two annotators disagree
    annotate("a.png", "dog", people[1])
    annotate("b.png", "fox", people[0])  # one of two: open
    assert tasks()["a.png"]["is_labeled"]

    assert ingest(tmp_path / "rounds" / "1") == {"a.png": REQUEUED, "b.png": OPEN}
    after = tasks()
    assert after["a.png"]["overlap"] == before["a.png"]["overlap"] + 1
    assert not after["a.png"]["is_labeled"]  # Label Studio serves it again
    assert after["b.png"]["overlap"] == 2
    assert manifest.samples["a.png"].state == "queued"
    report = json.loads((tmp_path / "rounds" / "1" / "labelstudio_report.json").read_text())
    (listed,) = report["disagreements"]
    assert listed["votes"] == {"cat": 1, "dog": 1} and "3 answers asked" in listed["detail"]

    # An ingest again (a rerun, or the next round before the answer came) asks no more.
    assert ingest(tmp_path / "rounds" / "1")["a.png"] == REQUEUED
    assert tasks()["a.png"]["overlap"] == 3

    annotate("a.png", "dog", people[2])  # the third answer decides it
    assert tasks()["a.png"]["is_labeled"]
    assert ingest(tmp_path / "rounds" / "2")["a.png"] == ACCEPTED
    assert (manifest.samples["a.png"].state, manifest.samples["a.png"].label) == ("labeled", "dog")
    assert (tmp_path / "data" / "raw" / "dog").is_dir()
    http.close()
