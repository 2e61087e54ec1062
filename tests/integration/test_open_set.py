"""An open-set campaign end to end (real DVC, sqlite MLflow, git; simulated annotator):
images of a class the campaign does not have are answered "other", counted as answers
spent, grouped into a candidate new class in the round report; the class is added by
moving them into data/raw/<name>/, and the campaign goes on with one more class and not
one answer lost."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

from mlflow import MlflowClient

from activelearn.config import LabelingConfig
from activelearn.rounds.campaign import run_campaign
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.repo import campaign_id
from tests.helpers import make_config, make_workspace


def test_a_class_found_among_other_answers_is_added_without_losing_an_answer(
    tmp_path, tiny_model_cfg, bentoml_home
):
    ws = tmp_path / "campaign"
    make_workspace(ws)
    held_out = tmp_path / "c2-test"  # the campaign starts without class c2
    shutil.move(ws / "data" / "test" / "c2", held_out)
    shutil.rmtree(ws / "data" / "raw" / "c2")
    cfg = make_config(ws, tiny_model_cfg, rounds=3, budget=200)
    cfg = replace(
        cfg,
        strategy=replace(cfg.strategy, name="random", batch_size=15),
        labeling=LabelingConfig(new_class_after=3),
    )
    states = run_campaign(cfg)
    assert [s.train.labeled for s in states][0] == 4
    last = states[-1].train
    other = last.not_labeled["other"]
    assert other > 0 and last.answers == last.labeled + other  # 4 seeds + 30 answers
    assert last.answers == 4 + 2 * 15
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    negatives = manifest.in_state("other")
    assert len(negatives) == other
    assert all(sid.split("/")[-1].startswith("pool-2-") for sid in negatives)  # all c2
    listed = json.loads((ws / "rounds" / "2" / "new_classes.json").read_text())
    assert sum(c["answers"] for c in listed) <= other and listed[0]["answers"] >= 3
    assert (ws / "rounds" / "2" / "new_class_1.png").stat().st_size > 0
    state = json.loads((ws / "rounds" / "2" / "state.json").read_text())
    assert state["phases"]["train"]["answers"] == last.answers  # in the round's record
    client = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(ws.name)  # named after the workspace folder
    parent = next(
        run
        for run in client.search_runs([experiment.experiment_id])
        if run.info.run_name == campaign_id(ws)
    )
    by_answers = client.get_metric_history(parent.info.run_id, "test_accuracy_by_answers")
    by_labels = client.get_metric_history(parent.info.run_id, "test_accuracy")
    assert [p.step for p in by_answers] == [s.train.answers for s in states]  # 4, 19, 34
    assert [p.step for p in by_labels] == [s.train.labeled for s in states]
    assert [p.value for p in by_answers] == [p.value for p in by_labels]

    # Adding the class (docs/guides: "Adding a class"): its folder under data/raw/ with
    # the images answered other, test images if there are some; the labeling config
    # follows the class folders.
    (ws / "data" / "raw" / "c2").mkdir()
    for path in (ws / "data" / "other").iterdir():
        shutil.move(path, ws / "data" / "raw" / "c2" / path.name)
    shutil.move(held_out, ws / "data" / "test" / "c2")
    more = run_campaign(replace(cfg, campaign=replace(cfg.campaign, rounds=4)))
    assert [s.round for s in more] == [3]
    now = more[0].train
    assert sorted(now.per_class) == ["c0", "c1", "c2"]
    assert now.per_class["c2"] >= other  # the other answers became its labels
    assert now.not_labeled["other"] == 0
    assert now.answers == last.answers + 15  # not one answer lost, none counted twice
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    assert {manifest.samples[sid].label for sid in negatives} == {"c2"}
