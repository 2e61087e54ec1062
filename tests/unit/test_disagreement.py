"""Answers that disagree are adjudicated (`labeling.on_disagreement=requeue`, the default):
the task is asked one more answer and its image stays queued until that answer decides
it; `reject` rejects it as before. Here the pure decision (`decide`); the requeue against
a real Label Studio is in tests/integration/test_disagreement.py."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from activelearn.config import LabelingConfig, OnDisagreement, register_configs
from activelearn.labeling.answers import (
    ACCEPTED,
    DISAGREEMENT,
    REQUEUED,
    Answer,
    apply_answers,
)
from activelearn.labeling.labelstudio.tasks import answerers, decide
from activelearn.workspace.layout import PROJECT_ROOT
from activelearn.workspace.manifest import Manifest

CLASSES = ["cat", "dog", "fox"]


def choice(label: str) -> list[dict]:
    return [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    ]


def task(*labels: str | None, overlap: int | None = None, ground_truth: int = 0) -> dict:
    """An exported task with one annotation per label (None: cancelled), each by another
    person; the first `ground_truth` ones starred."""
    annotations = [
        {
            "was_cancelled": label is None,
            "result": [] if label is None else choice(label),
            "ground_truth": i < ground_truth,
            "completed_by": 10 + i,
        }
        for i, label in enumerate(labels)
    ]
    return {"id": 7, "annotations": annotations, "overlap": overlap}


def test_a_tie_asks_one_more_answer_by_default():
    outcome = decide(task("cat", "dog", overlap=2), "s", CLASSES, annotations_per_task=2)
    assert outcome.answer.status == REQUEUED
    assert (outcome.task_id, outcome.overlap) == (7, 3)
    assert outcome.answer.detail == "task 7: votes cat x1, dog x1 (majority), 3 answers asked"
    assert LabelingConfig().on_disagreement == OnDisagreement.requeue


def test_reject_keeps_the_old_behaviour():
    outcome = decide(task("cat", "dog"), "s", CLASSES, on_disagreement="reject")
    assert (outcome.answer.status, outcome.overlap) == (DISAGREEMENT, None)


def test_a_requeued_task_waits_for_its_answer_and_is_decided_by_it():
    waiting = task("cat", "dog", overlap=3)
    for _ in range(2):  # deciding again (a rerun) asks nothing more
        outcome = decide(waiting, "s", CLASSES, annotations_per_task=2)
        assert (outcome.answer.status, outcome.overlap) == (REQUEUED, 3)
    decided = decide(task("cat", "dog", "dog", overlap=3), "s", CLASSES, annotations_per_task=2)
    assert (decided.answer.status, decided.answer.label) == (ACCEPTED, "dog")
    split = decide(task("cat", "dog", "fox", overlap=3), "s", CLASSES, annotations_per_task=2)
    assert (split.answer.status, split.overlap) == (REQUEUED, 4)  # still none: one more
    skipped = decide(task("cat", "dog", None, overlap=3), "s", CLASSES, annotations_per_task=2)
    assert (skipped.answer.status, skipped.overlap) == (REQUEUED, 4)  # a skip decides nothing


def test_one_more_person_is_asked_as_label_studio_counts_them():
    """Label Studio's overlap counts people (skips included), not annotations."""
    twice = task("cat", "dog", None, overlap=1)
    for annotation in twice["annotations"][:2]:
        annotation["completed_by"] = {"id": 10, "email": "one@example.com"}  # expanded
    assert answerers(twice) == 2
    assert decide(twice, "s", CLASSES).overlap == 3
    del twice["annotations"][2]["completed_by"]  # no author: a person of its own
    assert answerers(twice) == 2


def test_no_answer_can_decide_a_unanimous_vote_or_two_ground_truths():
    """More answers can never make a dissent unanimous, nor outvote ground truths."""
    unanimous = decide(task("cat", "cat", "dog"), "s", CLASSES, vote="unanimous")
    assert unanimous.answer.status == DISAGREEMENT
    starred = decide(task("cat", "dog", "dog", ground_truth=2), "s", CLASSES)
    assert starred.answer.status == DISAGREEMENT


def test_a_requeued_image_stays_queued(tmp_path):
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state("a.png", "queued", round=1)
    answer = Answer("a.png", REQUEUED, detail="task 7: votes cat x1, dog x1 (majority)")
    counts = apply_answers([answer], manifest, tmp_path / "pool", tmp_path / "raw", round=1)
    assert counts == {REQUEUED: 1}
    assert (manifest.samples["a.png"].state, manifest.samples["a.png"].round) == ("queued", 1)


def test_the_setting_takes_only_its_values():
    register_configs()
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        for value in ("requeue", "reject"):
            composed = compose(
                "config", ["labeling=labelstudio", f"labeling.on_disagreement={value}"]
            )
            assert OmegaConf.to_object(composed).labeling.on_disagreement == value
        with pytest.raises(ConfigCompositionException, match="on_disagreement"):
            compose("config", ["labeling.on_disagreement=ask"])
