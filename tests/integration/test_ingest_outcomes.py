"""What ingest made of each answered image: in the Label Studio report (per image, and
counted, under round names that say which round ingested the answers to which queue)
and in the round's log, the same for the simulated annotator and Label Studio."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from activelearn.config import LabelingConfig, StrategyConfig
from activelearn.data.images import Preprocessing
from activelearn.labeling.labelstudio import LabelStudioAnnotator
from activelearn.rounds.phases import Round, ingest
from activelearn.rounds.state import RoundState
from activelearn.scoring.select import score_and_select
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem
from serving.label_config import choice_target
from tests.helpers import INGEST_SUMMARY, queued_workspace

pytest_plugins = ["tests.labelstudio_server"]


CLASSES = ["cat", "dog"]


def labelstudio_labeling(labelstudio, title: str, tmp_path: Path) -> LabelingConfig:
    """The test server's project `title`, its state file in the workspace's rounds/."""
    return LabelingConfig(
        kind="labelstudio",
        url=labelstudio.url,
        project_title=title,
        state_file=str(tmp_path / "rounds" / "labelstudio.json"),
    )


def test_label_studio_reports_each_outcome_and_logs_the_same_summary(
    labelstudio, tmp_path, monkeypatch, caplog
):
    """Round 1 ingests the answers people gave to round 0's queue: its report, in
    rounds/1, says so, and what became of each answered image."""
    pool = labelstudio.new_pool_dir("pool-outcomes")
    samples = ["labeled.png", "rejected.png", "pool.png", "requeued.png", "open.png"]
    cfg = queued_workspace(tmp_path, monkeypatch, pool, samples)
    cfg.labeling = labelstudio_labeling(labelstudio, "outcomes", tmp_path)
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


def test_an_image_answered_other_in_label_studio_leaves_the_pool_and_is_never_queued_again(
    labelstudio, tmp_path, monkeypatch
):
    """The project's labeling config offers labeling.other_label; a person picks it; the
    next round's ingest puts the image in data/other/ and out of the pool for good, so the
    next selection cannot queue it, while a skipped image comes back (once)."""
    pool = labelstudio.new_pool_dir("pool-other")
    samples = ["negative.png", "cat.png", "skipped.png"]
    cfg = queued_workspace(tmp_path, monkeypatch, pool, samples)
    cfg.labeling = labelstudio_labeling(labelstudio, "other answer", tmp_path)
    other = cfg.labeling.other_label
    annotator = LabelStudioAnnotator(cfg.labeling, CLASSES, pool, token=labelstudio.token)
    annotator.push(0, [QueueItem(sid, 1, "cat", 0.5, 0.5) for sid in samples])
    headers = {"Authorization": f"Token {labelstudio.token}"}
    with httpx.Client(base_url=labelstudio.url, headers=headers, timeout=60) as http:
        project = json.loads(Path(cfg.labeling.state_file).read_text())["project_id"]
        config = http.get(f"/api/projects/{project}").raise_for_status().json()["label_config"]
        assert f'<Choice value="{other}"' in config  # what people see in Label Studio
        assert choice_target(config).choices == tuple(CLASSES)  # serving never predicts it
        params = {"project": project, "fields": "task_only", "page_size": 100}
        listed = http.get("/api/tasks", params=params).raise_for_status().json()["tasks"]
        ids = {t["data"]["sample_id"]: t["id"] for t in listed}
        for sid, label in {"negative.png": other, "cat.png": "cat", "skipped.png": None}.items():
            choice = {"from_name": "label", "to_name": "image", "type": "choices"}
            result = [] if label is None else [choice | {"value": {"choices": [label]}}]
            body = {"result": result, "was_cancelled": label is None}
            http.post(f"/api/tasks/{ids[sid]}/annotations/", json=body).raise_for_status()

    result = ingest(Round(cfg, 1, RoundState(1), Manifest.load(cfg.data.manifest), annotator))
    assert result.outcomes == {"accepted": 1, "other": 1, "skipped": 1}
    manifest = Manifest.load(cfg.data.manifest)
    negative = manifest.samples["negative.png"]
    assert (negative.state, negative.round) == ("other", 0)
    assert other in negative.reason
    assert [p.name.split("~")[0] for p in Path(cfg.data.other_dir).iterdir()] == ["negative"]
    assert (manifest.samples["skipped.png"].state, manifest.samples["skipped.png"].skips) == (
        "pool",
        1,
    )
    queued = score_and_select(
        None,
        manifest,
        pool,
        StrategyConfig(name="random", batch_size=10),
        tmp_path / "rounds" / "1",
        labeled_x=None,
        prep=Preprocessing((8, 8), 1),
        seed=0,
    ).queue
    assert [item.sample_id for item in queued] == ["skipped.png"]
