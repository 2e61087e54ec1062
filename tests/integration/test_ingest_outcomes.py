"""What ingest made of each answered image: in the Label Studio report (per image, and
counted, under round names that say which round ingested the answers to which queue)
and in the round's log, the same for the simulated annotator and Label Studio."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from activelearn.config import LabelingConfig
from activelearn.labeling.labelstudio import LabelStudioAnnotator
from activelearn.rounds.phases import Round, ingest
from activelearn.rounds.state import RoundState
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem
from tests.helpers import INGEST_SUMMARY, queued_workspace

pytest_plugins = ["tests.labelstudio_server"]


CLASSES = ["cat", "dog"]


def test_label_studio_reports_each_outcome_and_logs_the_same_summary(
    labelstudio, tmp_path, monkeypatch, caplog
):
    """Round 1 ingests the answers people gave to round 0's queue: its report, in
    rounds/1, says so, and what became of each answered image."""
    pool = labelstudio.new_pool_dir("pool-outcomes")
    samples = ["labeled.png", "rejected.png", "pool.png", "requeued.png", "open.png"]
    cfg = queued_workspace(tmp_path, monkeypatch, pool, samples)
    cfg.labeling = LabelingConfig(
        kind="labelstudio",
        url=labelstudio.url,
        project_title="outcomes",
        state_file=str(tmp_path / "rounds" / "labelstudio.json"),
    )
    annotator = LabelStudioAnnotator(cfg.labeling, CLASSES, pool, token=labelstudio.token)
    annotator.push(0, [QueueItem(sid, 1, "cat", 0.5, 0.5) for sid in samples])
    headers = {"Authorization": f"Token {labelstudio.token}"}
    with httpx.Client(base_url=labelstudio.url, headers=headers, timeout=60) as http:
        project = json.loads(Path(cfg.labeling.state_file).read_text())["project_id"]
        params = {"project": project, "fields": "task_only", "page_size": 100}
        listed = http.get("/api/tasks", params=params).raise_for_status().json()["tasks"]
        ids = {t["data"]["sample_id"]: t["id"] for t in listed}
        answers = {
            "labeled.png": ["cat"],
            "rejected.png": ["zebra"],
            "pool.png": [None],
            "requeued.png": ["cat", "dog"],
        }
        for sid, labels in answers.items():
            for label in labels:
                result = (
                    []
                    if label is None
                    else [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [label]},
                        }
                    ]
                )
                body = {"result": result, "was_cancelled": label is None}
                http.post(f"/api/tasks/{ids[sid]}/annotations/", json=body).raise_for_status()

    with caplog.at_level(logging.INFO, logger="activelearn"):
        ingest(Round(cfg, 1, RoundState(1), Manifest.load(cfg.data.manifest), annotator))

    report = json.loads((tmp_path / "rounds" / "1" / "labelstudio_report.json").read_text())
    assert (report["ingested_in_round"], report["answers_to_round"]) == (1, 0)
    assert {a["sample_id"]: a["outcome"] for a in report["answered"]} == {
        "labeled.png": "labeled",
        "rejected.png": "rejected",
        "pool.png": "back_to_pool",
        "requeued.png": "queued_again",
    }
    assert report["answered"][0]["label"] == "cat"
    assert report["outcomes"] == {
        "labeled": 1,
        "other": 0,
        "rejected": 1,
        "back_to_pool": 1,
        "queued_again": 1,
        "still_open": 1,
    }
    assert INGEST_SUMMARY.format(other=0, rejected=1, requeued=1, open=1) in caplog.text
    manifest = Manifest.load(cfg.data.manifest)
    assert {sid: manifest.samples[sid].state for sid in samples} == {
        "labeled.png": "labeled",
        "rejected.png": "rejected",
        "pool.png": "pool",
        "requeued.png": "queued",
        "open.png": "queued",
    }
