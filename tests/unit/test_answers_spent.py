"""Budgets and curves in answers spent: labels plus images answered "other", skipped or
rejected, since each cost an answer."""

from __future__ import annotations

import json

from activelearn.rounds.phases import not_labeled
from activelearn.strategies.stopping import LabelBudget, Progress
from activelearn.tracking.report import campaign_curve, wasted_share
from activelearn.workspace.manifest import Manifest


def test_answers_spent_count_other_skips_and_the_annotators_rejections(tmp_path):
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.set_state("l.png", "labeled", round=0, label="cat")
    manifest.set_state("o1.png", "other", round=0, reason="answered other")
    manifest.set_state("o2.png", "other", round=1, reason="answered other")
    manifest.set_state("s.png", "pool", skips=1)  # skipped once, back in the pool
    manifest.set_state("x.png", "rejected", round=1, reason="skipped 2 times", skips=1)
    manifest.set_state("bad.png", "rejected", reason="not a readable image")  # no answer
    manifest.set_state("q.png", "queued", round=2)
    assert not_labeled(manifest) == {"other": 2, "skipped": 2, "rejected": 1}


def test_the_budget_counts_answers_not_labels():
    budget = LabelBudget(30)
    assert budget.stop(Progress(labeled=20)) is None  # closed set: answers are labels
    assert budget.stop(Progress(labeled=20, answers=25)) is None
    assert budget.stop(Progress(labeled=20, waiting=5, answers=25)) == (
        "label budget of 30 spent (20 labeled, 5 answered other, skipped or rejected, "
        "5 still queued)"
    )
    assert budget.stop(Progress(labeled=30)) == "label budget of 30 spent"


def write_round(ws, n, labeled, answers, wasted, accuracy):
    train = {"labeled": labeled, "metrics": {"labeled_images": labeled, "accuracy": accuracy}}
    if answers is not None:
        train |= {"answers": answers, "not_labeled": {"other": wasted, "skipped": 0}}
    path = ws / "rounds" / str(n) / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"round": n, "phases": {"train": train}}))


def test_the_learning_curve_over_answers_and_the_share_wasted(tmp_path):
    write_round(tmp_path, 0, 14, 14, 0, 0.80)
    write_round(tmp_path, 1, 18, 24, 6, 0.85)
    write_round(tmp_path, 10, 27, 34, 7, 0.90)  # rounds sort by number, not name
    assert campaign_curve(tmp_path) == [(14, 0.80), (18, 0.85), (27, 0.90)]
    assert campaign_curve(tmp_path, "answers") == [(14, 0.80), (24, 0.85), (34, 0.90)]
    assert wasted_share(tmp_path) == 7 / 20


def test_rounds_from_before_answers_were_counted_plot_their_labels(tmp_path):
    write_round(tmp_path, 0, 14, None, 0, 0.80)
    write_round(tmp_path, 1, 24, None, 0, 0.85)
    assert campaign_curve(tmp_path, "answers") == [(14, 0.80), (24, 0.85)]
    assert wasted_share(tmp_path) != wasted_share(tmp_path)  # NaN: nothing to tell
