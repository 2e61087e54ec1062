"""What ingest made of each answered image: in the Label Studio report (per image, and
counted, under round names that say which round ingested the answers to which queue)
and in the round's log, the same for the simulated annotator and Label Studio."""

from __future__ import annotations

import csv
import logging

from PIL import Image

from activelearn.labeling import SimulatedAnnotator
from activelearn.labeling.answers import (
    ACCEPTED,
    DELETED,
    DISAGREEMENT,
    EXCLUDED,
    OPEN,
    OTHER,
    OUTCOME,
    REMOVED,
    REQUEUED,
    SKIPPED,
    SKIPPED_TOO_OFTEN,
    UNKNOWN_LABEL,
    Answer,
    apply_answers,
    describe_outcomes,
)
from activelearn.labeling.labelstudio.tasks import TaskOutcome, round_report
from activelearn.rounds.phases import Round, ingest
from activelearn.rounds.state import RoundState
from activelearn.workspace.manifest import Manifest
from tests.helpers import INGEST_SUMMARY, queued_workspace

CLASSES = ["cat", "dog"]


STATE = {  # the manifest state each outcome leaves
    "labeled": "labeled",
    "other": "other",
    "rejected": "rejected",
    "back_to_pool": "pool",
    "queued_again": "queued",
    "still_open": "queued",
}


def test_each_status_does_what_its_outcome_says(tmp_path):
    """`OUTCOME` is what `apply_answers` does: the report's word for each answer is the
    manifest's state after it."""
    pool, raw = tmp_path / "pool", tmp_path / "raw"
    pool.mkdir()
    statuses = [ACCEPTED, OTHER, DISAGREEMENT, UNKNOWN_LABEL, EXCLUDED, SKIPPED_TOO_OFTEN, REMOVED]
    statuses += [SKIPPED, DELETED, REQUEUED, OPEN]
    assert set(statuses) == set(OUTCOME)
    manifest = Manifest(tmp_path / "manifest.csv")
    answers = []
    for status in statuses:
        sid = f"{status}.png"
        if status != REMOVED:
            Image.new("L", (4, 4)).save(pool / sid)
        manifest.set_state(sid, "queued", round=0)
        answers.append(Answer(sid, status, "cat" if status == ACCEPTED else None, "why"))
    counts = apply_answers(answers, manifest, pool, raw, round=0)
    for status in statuses:
        assert manifest.samples[f"{status}.png"].state == STATE[OUTCOME[status]], status
    assert describe_outcomes(counts) == (
        "labeled 1, other 1, rejected 5, back to pool 2, queued again 1, still open 1"
    )
    again = apply_answers(answers, manifest, pool, raw, round=0)  # a rerun: applied before
    assert describe_outcomes(again).endswith("queued again 1, still open 1, unchanged 7")


def test_the_report_names_its_rounds_and_each_answered_images_outcome():
    outcomes = [
        TaskOutcome(Answer("a.png", ACCEPTED, "cat", "task 1: 1 of 1"), ["cat"], 1),
        TaskOutcome(Answer("b.png", REQUEUED, detail="task 2: votes"), ["cat", "dog"], 2, 3),
        TaskOutcome(Answer("c.png", UNKNOWN_LABEL, detail="task 3: zebra"), ["zebra"], 3),
        TaskOutcome(Answer("d.png", SKIPPED, detail="task 4: cancelled (1x)"), [], 4),
        TaskOutcome(Answer("e.png", OPEN, detail="task 5: 0 of 1 answers"), [], 5),
    ]
    report = round_report(3, "annotations.raw.json", outcomes)
    assert "round" not in report
    assert (report["ingested_in_round"], report["answers_to_round"]) == (4, 3)
    assert report["answered"] == [
        {"sample_id": "a.png", "outcome": "labeled", "status": ACCEPTED, "label": "cat"},
        {"sample_id": "b.png", "outcome": "queued_again", "status": REQUEUED},
        {"sample_id": "c.png", "outcome": "rejected", "status": UNKNOWN_LABEL},
        {"sample_id": "d.png", "outcome": "back_to_pool", "status": SKIPPED},
    ]
    assert report["outcomes"] == {
        "labeled": 1,
        "other": 0,
        "rejected": 1,
        "back_to_pool": 1,
        "queued_again": 1,
        "still_open": 1,
    }


def test_the_simulated_annotators_ingest_logs_what_became_of_its_answers(
    tmp_path, monkeypatch, caplog
):
    pool = tmp_path / "data" / "pool"
    pool.mkdir(parents=True)
    cfg = queued_workspace(tmp_path, monkeypatch, pool, ["a.png", "b.png", "c.png"])
    with open(cfg.data.pool_labels, "w", newline="") as f:  # c.png: not in the file
        csv.writer(f).writerows([("path", "label"), ("a.png", "cat"), ("b.png", "zebra")])
    annotator = SimulatedAnnotator(cfg.data.pool_labels, CLASSES)
    with caplog.at_level(logging.INFO, logger="activelearn.rounds"):
        ingest(Round(cfg, 1, RoundState(1), Manifest.load(cfg.data.manifest), annotator))
    assert INGEST_SUMMARY.format(other=1, rejected=0, requeued=0, open=0) in caplog.text
