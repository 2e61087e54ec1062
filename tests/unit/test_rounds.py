"""A round's phases on a tiny generated workspace, in process: ingest, the stop rule,
the params logged. Rounds end to end (real DVC, MLflow, git) and the crash tests are in
tests/integration/test_rounds.py."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from activelearn.config import CampaignConfig, Config, TrackingConfig
from activelearn.data.images import Preprocessing
from activelearn.rounds.phases import Round, flat_params, ingest, open_queue, stop_set_agreement
from activelearn.rounds.state import RoundState
from activelearn.strategies.stopping import Agreement
from activelearn.workspace.manifest import Manifest
from tests.helpers import make_workspace


class AlwaysFirstClass:
    """A model stand-in for the stop rule: predicts c0 for every image."""

    prep = Preprocessing((12, 12), 1)
    class_names = ["c0", "c1", "c2"]

    def predict_proba(self, x):
        return np.tile([1.0, 0.0, 0.0], (len(x), 1))


def test_a_sample_queued_again_is_answered_once(tmp_path, monkeypatch):
    """Queued in round 0, sent back to the pool, queued again in round 1: in both queue
    files, but the round-2 ingest collects and counts it once."""
    from activelearn import labeling
    from activelearn.workspace.queue import QueueItem, write_queue

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    again, waiting = "batch0/pool-0-00.png", "batch1/pool-1-01.png"
    manifest = Manifest(tmp_path / "data" / "manifest.csv")
    manifest.set_state(again, "queued", round=1)
    manifest.set_state(waiting, "queued", round=0)
    write_queue(
        "rounds/0/queue.jsonl", [QueueItem(s, 1, None, None, 0.0) for s in (again, waiting)]
    )
    write_queue("rounds/1/queue.jsonl", [QueueItem(again, 1, None, None, 0.0)])
    cfg = Config()
    annotator = labeling.SimulatedAnnotator(cfg.data.pool_labels, ["c0", "c1", "c2"])
    result = ingest(Round(cfg, 2, RoundState(2), manifest, annotator))
    assert result.answers == 2 and result.outcomes[labeling.ACCEPTED] == 2
    assert manifest.samples[again].round == 1 and manifest.samples[waiting].round == 0


def test_an_ingest_rerun_after_its_answers_were_saved_still_goes_on(tmp_path, monkeypatch):
    """Killed after the manifest took 9 of 10 answers, before the phase was recorded: the
    rerun finds 1 open image, which is 10% of the queue, not 100%."""
    from activelearn import labeling
    from activelearn.workspace.queue import QueueItem, write_queue

    class NineOfTen:  # people who have answered all but the last image (no server here)
        def collect(self, round, queue, round_dir, answered=()):
            return [
                labeling.Answer(q.sample_id, labeling.OPEN)
                if q.sample_id == ids[-1]
                else labeling.Answer(q.sample_id, labeling.ACCEPTED, "c0")
                for q in queue
            ]

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    cfg = Config(campaign=CampaignConfig(min_answered=0.8))
    manifest = Manifest(cfg.data.manifest)
    ids = [f"batch{i % 3}/pool-0-{i:02d}.png" for i in range(10)]
    for sid in ids:
        manifest.set_state(sid, "queued", round=0)
    manifest.save()
    write_queue("rounds/0/queue.jsonl", [QueueItem(s, 1, None, None, 0.0) for s in ids])
    for run in ("first", "rerun"):
        result = ingest(Round(cfg, 1, RoundState(1), Manifest.load(cfg.data.manifest), NineOfTen()))
        assert result.open == 1, run
    assert Counter(s.state for s in Manifest.load(cfg.data.manifest).samples.values()) == {
        "labeled": 9,
        "queued": 1,
    }


def test_queued_images_removed_from_the_pool_are_rejected_and_hold_nothing_up(
    tmp_path, monkeypatch, caplog
):
    """One answered and one still open, both removed from data/pool/: the round goes on
    (min_answered=1), both are rejected with the reason, and neither is open any more."""
    from activelearn import labeling
    from activelearn.workspace.manifest import NOT_IN_POOL
    from activelearn.workspace.queue import QueueItem, write_queue

    answered, unanswered = "batch0/pool-0-00.png", "batch1/pool-0-01.png"

    class OneOpen:  # stands in for any Annotator: people who answered all but one image
        def collect(self, round, queue, round_dir, answered=()):
            return [
                labeling.Answer(q.sample_id, labeling.OPEN)
                if q.sample_id == unanswered
                else labeling.Answer(q.sample_id, labeling.ACCEPTED, "c0")
                for q in queue
            ]

    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    cfg = Config()
    manifest = Manifest(cfg.data.manifest)
    ids = [answered, unanswered, "batch2/pool-0-02.png"]
    for sid in ids:
        manifest.set_state(sid, "queued", round=0)
    write_queue("rounds/0/queue.jsonl", [QueueItem(s, 1, None, None, 0.0) for s in ids])
    for sid in (answered, unanswered):
        (tmp_path / cfg.data.pool_dir / sid).unlink()
    r = Round(cfg, 1, RoundState(1), manifest, OneOpen())
    result = ingest(r)
    outcomes = result.outcomes
    assert (result.open, outcomes[labeling.ACCEPTED], outcomes[labeling.REMOVED]) == (0, 1, 2)
    for sid in (answered, unanswered):
        assert (manifest.samples[sid].state, manifest.samples[sid].reason) == (
            "rejected",
            NOT_IN_POOL,
        )
        assert sid in caplog.text
    assert open_queue(r) == []  # not collected, nor pushed again


def test_the_stop_rule_leaves_out_stop_set_images_removed_from_the_pool(
    tmp_path, monkeypatch, caplog
):
    """Against predictions an older version stored (a list aligned with the stop set):
    removed images are left out, labeled ones too; with none left, no stop signal."""
    monkeypatch.chdir(tmp_path)
    make_workspace(tmp_path)
    cfg = Config(campaign=CampaignConfig(stop_patience=1, stop_agreement=0.5))
    pool = tmp_path / cfg.data.pool_dir
    stop_set = [f"batch{i % 3}/pool-0-{i:02d}.png" for i in range(4)]
    labeled, removed, same, differs = stop_set
    manifest = Manifest(cfg.data.manifest)
    manifest.sync_pool(pool, AlwaysFirstClass.prep)
    manifest.set_state(labeled, "labeled", round=0, label="c0")
    (tmp_path / "rounds" / "0").mkdir(parents=True)
    (tmp_path / "rounds" / "stop_set.json").write_text(json.dumps(stop_set))
    (tmp_path / "rounds" / "0" / "stop_predictions.json").write_text(
        json.dumps(["c1", "c1", "c0", "c1"])
    )
    for sid in (labeled, removed):  # the labeled one's copy is in data/raw
        (pool / sid).unlink()

    def signal(n):
        return stop_set_agreement(Round(cfg, n, RoundState(n), manifest, None), AlwaysFirstClass())

    assert signal(1) == Agreement(share=0.5, images=2)  # same, differs
    stored = json.loads((tmp_path / "rounds" / "1" / "stop_predictions.json").read_text())
    assert stored == [None, None, "c0", "c0"]  # still aligned with the stop set
    assert removed in caplog.text and labeled not in caplog.text

    for sid in (same, differs):
        (pool / sid).unlink()
    assert signal(2) is None
    assert "labeled or removed from the pool: no stop signal" in caplog.text


def test_params_leave_out_a_password_written_into_a_url():
    for uri in (
        "postgresql://me:s3cret@db:5432/mlflow",
        "postgresql://me:s3/c?r#et@db:5432/mlflow",
    ):
        params = flat_params(Config(tracking=TrackingConfig(uri=uri)))
        assert params["tracking.uri"] == "postgresql://db:5432/mlflow"
        assert "s3" not in json.dumps(params)
    assert params["labeling.url"] == "http://127.0.0.1:8080"  # nothing to leave out
    at_in_path = "file:///home/me@work/mlruns"
    assert flat_params(Config(tracking=TrackingConfig(uri=at_in_path)))["tracking.uri"] == (
        at_in_path
    )
