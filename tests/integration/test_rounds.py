"""Rounds and campaigns end to end on tiny generated data: real DVC, real sqlite MLflow,
real git; and crash tests that SIGKILL the round at every phase boundary."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from activelearn.errors import RoundBlocked
from activelearn.rounds.campaign import run_campaign, run_round
from activelearn.rounds.state import PHASES, RoundState
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.repo import campaign_id
from tests.helpers import make_config, make_workspace, run_cli_round


def mlflow_client(ws: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns.db'}")


def campaign_run(ws: Path):
    """The campaign's parent run in MLflow."""
    client = mlflow_client(ws)
    experiment = client.get_experiment_by_name(ws.name)  # named after the workspace folder
    runs = client.search_runs([experiment.experiment_id])
    return next(r for r in runs if r.info.run_name == campaign_id(ws))


def campaign_state(ws: Path) -> dict:
    """Everything a rerun must reproduce: labels, manifest, queues, runs, model versions."""
    client = mlflow_client(ws)
    campaign = campaign_id(ws)
    experiment = client.get_experiment_by_name(ws.name)
    runs = client.search_runs([experiment.experiment_id])
    git = subprocess.run(["git", "tag"], cwd=ws, capture_output=True, text=True, check=True)

    def name(run) -> str:
        return "<campaign>" if run.info.run_name == campaign else run.info.run_name

    return {
        "labeled": sorted(str(p.relative_to(ws)) for p in (ws / "data" / "raw").rglob("*.png")),
        "manifest": (ws / "data" / "manifest.csv").read_text(),
        "queues": {
            p.parent.name: [json.loads(line)["sample_id"] for line in p.read_text().splitlines()]
            for p in sorted((ws / "rounds").glob("*/queue.jsonl"))
        },
        "runs": sorted(name(r) for r in runs),
        "metric_steps": {  # a rerun logs no second point at a step
            name(r): {
                key: sorted(p.step for p in client.get_metric_history(r.info.run_id, key))
                for key in r.data.metrics
            }
            for r in runs
        },
        "versions": len(client.search_model_versions(f"name = '{campaign}-classifier'")),
        "tags": git.stdout.split(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-round campaign."""
    from activelearn.config import ModelConfig

    saved = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(tmp_path_factory.mktemp("bentoml"))
    ws = tmp_path_factory.mktemp("reference") / "campaign"
    make_workspace(ws)
    tiny = ModelConfig(filters=[8], dense_units=16, dropout=0.1, min_steps=40, min_epochs=2)
    states = run_campaign(make_config(ws, tiny, rounds=3))
    yield ws, states, tiny
    if saved is None:
        os.environ.pop("BENTOML_HOME")
    else:
        os.environ["BENTOML_HOME"] = saved


def test_three_round_campaign_end_to_end(reference):
    ws, states, _ = reference
    assert [s.round for s in states] == [0, 1, 2]
    assert all(set(s.phases) == set(PHASES) for s in states)
    labeled = [s.train.labeled for s in states]
    assert labeled == [6, 12, 18]  # +batch_size per round
    assert all(s.train.metrics["test_images"] == 18 for s in states)

    state = campaign_state(ws)
    assert state["tags"] == ["round-0", "round-1", "round-2"]
    assert state["runs"] == ["<campaign>", "round-0", "round-1", "round-2"]
    assert state["versions"] == 3
    assert len(state["labeled"]) == 18
    queued = [sid for q in state["queues"].values() for sid in q]
    assert len(queued) == len(set(queued)) == 18  # never the same image twice

    client = mlflow_client(ws)
    experiment = client.get_experiment_by_name(ws.name)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = campaign_run(ws)
    curve = client.get_metric_history(parent.info.run_id, "test_accuracy")
    assert sorted(p.step for p in curve) == [6, 12, 18]  # labels on the x axis
    spent = client.get_metric_history(parent.info.run_id, "labels_spent")
    assert sorted((p.step, p.value) for p in spent) == [(6, 0), (12, 6), (18, 12)]
    assert len(client.get_metric_history(parent.info.run_id, "macro_f1")) == 3
    assert parent.info.status == "FINISHED"  # campaign.rounds=3 ran out
    child = [
        r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "round-1"
    ][0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    low, high = child.data.metrics["test_accuracy_low"], child.data.metrics["test_accuracy_high"]
    assert low <= child.data.metrics["test_accuracy"] <= high and high - low > 0.1  # 18 images
    for key in (
        "test_accuracy",
        "macro_f1",
        "labeled",
        "pool_left",
        *(f"seconds_{phase}" for phase in PHASES),  # those after `track` too
        "seconds_fit",
        *(f"seconds_stage_{stage}" for stage in ("prepare", "train", "evaluate")),
        "seconds_dvc",
        "batch_uncertainty_mean",
        "batch_uncertainty_max",
    ):
        assert key in child.data.metrics, key
    seconds = child.data.metrics  # the train phase: its stages, and DVC's own time
    stages = sum(seconds[f"seconds_stage_{s}"] for s in ("prepare", "train", "evaluate"))
    assert seconds["seconds_fit"] < seconds["seconds_stage_train"]
    assert seconds["seconds_dvc"] > 0
    assert stages + seconds["seconds_dvc"] == pytest.approx(seconds["seconds_train"], abs=0.05)
    assert child.data.params["strategy.name"] == "margin"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {
        "queue.jsonl",
        "confusion_matrix.png",
        "pool_uncertainty.png",
        "queue.png",
        "learning_curve.png",
        "model",
        "flipped.json",  # the test images whose prediction changed since round 0
    } <= artifacts
    diagnostics = child.data.metrics  # reported only, from the evaluate stage's predictions
    assert {"test_ece", "test_ece_uncalibrated", "temperature", "accuracy_drop"} <= set(diagnostics)
    assert {"flipped_to_wrong", "flipped_to_right"} <= set(diagnostics)
    assert any(key.startswith("class_accuracy_") for key in diagnostics)
    before = next(s for s in states if s.round == 0).train.metrics["accuracy"]
    after = next(s for s in states if s.round == 1).train.metrics["accuracy"]
    assert diagnostics["accuracy_drop"] == pytest.approx(before - after)


def test_round_tag_brings_back_that_rounds_data_and_model(reference):
    from activelearn.learner.classifier import Classifier

    ws, _, _ = reference
    subprocess.run(["git", "checkout", "-q", "round-1"], cwd=ws, check=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "dvc", "checkout", "-q", "--force"], cwd=ws, check=True
        )
        assert len(list((ws / "data" / "raw").rglob("*.png"))) == 12
        assert Classifier.load(ws / "model" / "classifier.bentomodel").version == "round-1"
    finally:
        subprocess.run(["git", "checkout", "-q", "-"], cwd=ws, check=True)
        subprocess.run(
            [sys.executable, "-m", "dvc", "checkout", "-q", "--force"], cwd=ws, check=True
        )
    assert len(list((ws / "data" / "raw").rglob("*.png"))) == 18
    assert Classifier.load(ws / "model" / "classifier.bentomodel").version == "round-2"


def test_rounds_compare_with_dvc_and_leave_the_workspace_committed(reference):
    ws, states, _ = reference

    def dvc(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", *args, "--json"], cwd=ws, capture_output=True, text=True
        )
        assert done.returncode == 0 and "failed" not in done.stderr, done.stderr[-2000:]
        return json.loads(done.stdout)

    accuracy = dvc("metrics", "diff", "round-1", "round-2", "--all")["evaluation/metrics.json"]
    assert accuracy["accuracy"]["old"] == states[1].train.metrics["accuracy"]
    assert accuracy["accuracy"]["new"] == states[2].train.metrics["accuracy"]
    (confusion,) = dvc("plots", "diff", "round-1", "round-2")["data"]["evaluation/confusion.csv"]
    rows = Counter(row["rev"] for row in confusion["content"]["data"]["values"])
    assert rows == {"round-1": 18, "round-2": 18}  # both rounds' models on the same test set
    untracked = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ws, capture_output=True, text=True, check=True
    ).stdout
    assert untracked == ""  # everything of the round is in its commit, or ignored


def test_rerunning_a_finished_round_changes_nothing(reference):
    ws, _, tiny = reference
    before = campaign_state(ws)
    run_round(replace(make_config(ws, tiny), round=1))
    assert campaign_state(ws) == before


def test_round_after_an_unfinished_round_is_refused(tmp_path, tiny_model_cfg, bentoml_home):
    ws = tmp_path / "campaign"
    make_workspace(ws)
    cfg = make_config(ws, tiny_model_cfg)
    cfg.round = 1
    with pytest.raises(RoundBlocked, match="round 0 has not finished"):
        run_round(cfg)


def test_a_label_studio_workspace_refuses_the_simulated_annotator(
    tmp_path, tiny_model_cfg, bentoml_home
):
    """`python -m activelearn round=N` without labeling=labelstudio (as a retrain command
    might run it) must not answer people's open tasks from the labels file."""
    ws = tmp_path / "campaign"
    make_workspace(ws)
    (ws / "rounds").mkdir()
    (ws / "rounds" / "labelstudio.json").write_text('{"project_id": 1}')
    with pytest.raises(RoundBlocked, match="run it with labeling=labelstudio"):
        run_round(replace(make_config(ws, tiny_model_cfg), round=0))


def test_killed_rounds_rerun_to_the_same_state(reference, tmp_path):
    ref_ws, _, _ = reference
    ws = tmp_path / "campaign"
    make_workspace(ws)
    kills = {
        0: ["before:select", "select:after-manifest", "before:commit"],
        1: ["before:ingest", "ingest:before-manifest", "before:track", "before:late-seconds"],
        2: ["before:train", "track:after-log", "before:push"],
    }
    for n, points in kills.items():
        for point in points:
            assert run_cli_round(ws, n, kill_at=point) == -9, point  # SIGKILLed there
        assert run_cli_round(ws, n) == 0
    ours, theirs = campaign_state(ws), campaign_state(ref_ws)
    assert ours == theirs


def test_campaign_stops_when_the_budget_is_spent_or_predictions_settle(
    tmp_path, tiny_model_cfg, bentoml_home, caplog
):
    ws = tmp_path / "campaign"
    make_workspace(ws)
    never_settles = {"stop_patience": 1, "stop_agreement": 2.0}
    spent = make_config(ws, tiny_model_cfg, rounds=5, budget=8, **never_settles)
    states = run_campaign(spent)
    assert [s.train.labeled for s in states] == [6, 8]  # last batch cut to 2
    assert states[-1].select.reason == "label budget of 8 spent"
    assert not (ws / "rounds" / "1" / "queue.jsonl").exists()
    assert campaign_run(ws).info.status == "FINISHED"  # its run ends with the campaign
    with caplog.at_level(logging.INFO, "activelearn.rounds"):
        assert run_campaign(spent) == []  # run again: no round, and it says why
    assert "already finished at round 1: label budget of 8 spent" in caplog.text
    assert not (ws / "rounds" / "2").exists()

    settled = make_config(
        ws, tiny_model_cfg, rounds=6, budget=100, stop_patience=3, stop_agreement=0.0
    )  # any agreement counts: round 0 had no model before it, rounds 1, 2, 3 agree
    more = run_campaign(settled)  # a raised budget lets the campaign go on
    assert [s.round for s in more] == [2, 3]
    assert run_campaign(settled) == [] and not (ws / "rounds" / "4").exists()
    assert not more[0].select.stop  # two rounds in a row are not three
    select = more[1].select
    assert select.reason == f"predictions stable: agreement {select.agreement:.3f} for 3 rounds"
    now, before = (
        np.array(json.loads((ws / "rounds" / str(n) / "stop_predictions.json").read_text()))
        for n in (3, 2)
    )
    assert len(now) == 90  # the whole pool at round 0 (stop_set is 200)
    assert set(now) | set(before) <= {"c0", "c1", "c2"}  # class names, as indices shift
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    stop_set = json.loads((ws / "rounds" / "stop_set.json").read_text())
    unlabeled = np.array([manifest.samples[s].state != "labeled" for s in stop_set])
    assert 0 < unlabeled.sum() < len(now)  # images labeled since are not compared
    assert select.agreement_images == unlabeled.sum()
    assert select.agreement == pytest.approx(np.mean((now == before)[unlabeled]))


def test_images_still_queued_count_against_the_budget(
    tmp_path, tiny_model_cfg, bentoml_home, monkeypatch
):
    """With campaign.min_answered < 1 a round goes on while images wait for people; they
    will be labeled, so the next batch is cut by them too and the budget is never passed."""
    from activelearn import labeling
    from activelearn.rounds import campaign

    class EveryOtherAnswered(labeling.SimulatedAnnotator):  # people halfway through a queue
        def collect(self, round, queue, round_dir, answered=()):
            answers = super().collect(round, queue, round_dir, answered)
            return [
                a if i % 2 else labeling.Answer(a.sample_id, labeling.OPEN)
                for i, a in enumerate(answers)
            ]

    monkeypatch.setattr(
        campaign,
        "make_annotator",
        lambda cfg, names: EveryOtherAnswered(cfg.data.pool_labels, names),
    )
    ws = tmp_path / "campaign"
    make_workspace(ws)
    cfg = make_config(ws, tiny_model_cfg, rounds=5, budget=12, min_answered=0.5)
    states = run_campaign(cfg)
    assert [s.train.labeled for s in states] == [6, 9]
    assert states[-1].select.reason == ("label budget of 12 spent (9 labeled, 3 still queued)")
    counts = Manifest.load(ws / "data" / "manifest.csv").counts()
    assert counts["labeled"] + counts["queued"] == 12 - 6  # the pool images paid for
    assert not (ws / "rounds" / "1" / "queue.jsonl").exists()


def test_a_campaign_without_labels_starts_cold(tmp_path, tiny_model_cfg, bentoml_home):
    import shutil

    from activelearn.workspace.queue import read_queue

    ws = tmp_path / "campaign"
    make_workspace(ws)
    shutil.rmtree(ws / "data" / "raw")  # a test set and a pool, no labels yet
    first, second = run_campaign(make_config(ws, tiny_model_cfg, rounds=2))
    assert first.train.cold_start and first.train.labeled == 0
    assert first.select.strategy == "random"  # strategy.cold_start
    queue = read_queue(ws / "rounds" / "0" / "queue.jsonl")
    assert len(queue) == 6 and all(q.predicted is None for q in queue)
    assert second.train.labeled == 6  # the cold batch, answered
    assert second.train.metrics["test_images"] == 18
    assert campaign_state(ws)["runs"] == ["<campaign>", "round-0", "round-1"]


def test_git_commit_false_leaves_the_workspace_history_alone(
    tmp_path, tiny_model_cfg, bentoml_home
):
    import shutil

    ws = tmp_path / "campaign"
    make_workspace(ws)
    shutil.rmtree(ws / "data" / "raw")  # a cold round: quick, and it still commits by default
    cfg = make_config(ws, tiny_model_cfg, git_commit=False)
    state = run_round(replace(cfg, round=0))
    assert state.commit.committed is False
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True)
    tags = subprocess.run(["git", "tag"], cwd=ws, capture_output=True, text=True, check=True)
    assert log.returncode != 0 and tags.stdout == ""  # no commit, no round-0 tag


def test_a_round_killed_before_the_typed_state_resumes_with_it(reference, tmp_path):
    """Round 0 killed before select under the version before the typed results: its
    state.json as that version wrote it; this version finishes the round as the
    uninterrupted campaign ran it."""
    ref_ws, _, _ = reference
    ws = tmp_path / "campaign"
    make_workspace(ws)
    assert run_cli_round(ws, 0, kill_at="before:select") == -9
    metrics = json.loads((ws / "evaluation" / "metrics.json").read_text())
    repro = {"prepare": 0.1, "train": 1.2, "evaluate": 0.2, "dvc": 1.3}
    train = {"labeled": 6, "per_class": {"c0": 2, "c1": 2, "c2": 2}, "metrics": metrics}
    train |= {"fit_seconds": 0.9, "repro_seconds": repro, "seconds": 2.8}
    before = {"round": 0, "phases": {"ingest": {"answers": 0, "seconds": 0.0}, "train": train}}
    (ws / "rounds" / "0" / "state.json").write_text(json.dumps(before, indent=2))
    assert run_cli_round(ws, 0) == 0
    state = RoundState.load(0, ws)
    assert state.finished and state.late_seconds_logged
    assert (state.train.metrics, state.train.repro_seconds) == (metrics, repro)
    ours, theirs = campaign_state(ws), campaign_state(ref_ws)
    assert ours["queues"]["0"] == theirs["queues"]["0"]
    assert ours["metric_steps"]["round-0"] == theirs["metric_steps"]["round-0"]
    assert (ours["runs"], ours["tags"]) == (["<campaign>", "round-0"], ["round-0"])
