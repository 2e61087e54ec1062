"""A 2-round campaign against the real Label Studio server, the test answering tasks
through the API as an annotator would, with a kill inside the push."""

import csv
import json
from dataclasses import replace

import httpx
import pytest

from activelearn.config import LabelingConfig
from activelearn.errors import RoundBlocked
from activelearn.rounds.campaign import run_round
from activelearn.workspace.manifest import Manifest
from tests.helpers import make_config, make_workspace, run_cli_round

pytest_plugins = ["tests.labelstudio_server"]


def still_open_ids(ws) -> set[str]:
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    return {s.sample_id for s in manifest.samples.values() if s.state == "queued"}


def test_two_rounds_with_people_in_label_studio(
    labelstudio, monkeypatch, bentoml_home, tiny_model_cfg
):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    ws = labelstudio.root / "rounds-campaign"  # under the server's local-files root
    make_workspace(ws)
    with (ws / "data" / "pool_labels.csv").open() as f:
        truth = {row["path"]: row["label"] for row in csv.DictReader(f)}
    labeling = LabelingConfig(
        kind="labelstudio",
        url=labelstudio.url,
        project_title="rounds-campaign",
        document_root=str(labelstudio.root),
    )
    cfg = replace(make_config(ws, tiny_model_cfg), labeling=labeling)
    overrides = (
        "labeling=labelstudio",
        f"labeling.url={labelstudio.url}",
        "labeling.project_title=rounds-campaign",
        f"labeling.document_root={labelstudio.root}",
    )

    # Round 0, killed right after Label Studio took the tasks, then run again.
    assert run_cli_round(ws, 0, "push:after-import", *overrides) == -9
    assert run_cli_round(ws, 0, None, *overrides) == 0

    http = httpx.Client(
        base_url=labelstudio.url,
        timeout=60,
        headers={"Authorization": f"Token {labelstudio.token}"},
    )
    found = http.get("/api/projects", params={"title": "rounds-campaign"}).json()["results"]
    (project,) = [p for p in found if p["title"] == "rounds-campaign"]  # `title` matches parts
    tasks = http.get("/api/tasks", params={"project": project["id"], "fields": "all"}).json()
    tasks = tasks["tasks"]
    assert len(tasks) == 6  # no duplicate from the killed push
    assert project["model_version"] == "round-0"
    assert all(
        t["predictions"] and t["predictions"][0]["model_version"] == "round-0" for t in tasks
    )

    # Round 1 refuses to start while round 0's queue is unanswered.
    with pytest.raises(RoundBlocked, match="not labeled yet"):
        run_round(replace(cfg, round=1))

    # People answer half, most uncertain first, as Label Studio serves them.
    answered = set()
    for _ in range(3):
        task = http.get(f"/api/projects/{project['id']}/next").raise_for_status().json()
        answered.add(task["data"]["sample_id"])
        label = truth[task["data"]["sample_id"]]
        http.post(
            f"/api/tasks/{task['id']}/annotations/",
            json={
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "image",
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
            },
        ).raise_for_status()

    with pytest.raises(RoundBlocked, match="3 of 6 queued images are not labeled yet") as err:
        run_round(replace(cfg, round=1))
    assert all(sid in str(err.value) for sid in still_open_ids(ws) - answered)  # named
    half = replace(cfg, round=1, campaign=replace(cfg.campaign, min_answered=0.5))
    state = run_round(half)
    assert state.ingest.outcomes["accepted"] == 3
    assert state.train.labeled == 9
    assert (ws / "rounds" / "1" / "annotations.raw.json").is_file()
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    labeled = {s.sample_id: s.label for s in manifest.samples.values() if s.state == "labeled"}
    assert set(labeled) == answered and all(truth[sid] == label for sid, label in labeled.items())
    still_open = {
        s.sample_id for s in manifest.samples.values() if s.state == "queued" and s.round == 0
    }
    assert len(still_open) == 3 and not still_open & answered

    # The open half is ranked again by round 1's model, in the round files and in Label Studio.
    rescored = (ws / "rounds" / "1" / "rescored.jsonl").read_text().splitlines()
    assert {json.loads(line)["sample_id"] for line in rescored} == still_open
    tasks = http.get("/api/tasks", params={"project": project["id"], "fields": "all"}).json()
    assert len(tasks["tasks"]) == 12
    for task in tasks["tasks"]:
        if task["data"]["sample_id"] in still_open:
            assert "round-1" in {p["model_version"] for p in task["predictions"]}
    assert http.get(f"/api/projects/{project['id']}").json()["model_version"] == "round-1"
    assert labelstudio.token not in (ws / "rounds" / "labelstudio.json").read_text()

    # An answer corrected in Label Studio after round 1 ingested it: round 2 reports it and
    # keeps the ingested label.
    changed = sorted(answered)[0]
    task_id = next(
        t["id"]
        for t in tasks["tasks"]
        if t["data"]["sample_id"] == changed and t["data"]["round"] == 0
    )
    (annotation,) = http.get(f"/api/tasks/{task_id}/annotations/").raise_for_status().json()
    other = next(label for label in sorted(set(truth.values())) if label != truth[changed])
    result = [{**annotation["result"][0], "value": {"choices": [other]}}]
    http.patch(f"/api/annotations/{annotation['id']}/", json={"result": result}).raise_for_status()
    run_round(replace(cfg, round=2, campaign=replace(cfg.campaign, min_answered=0)))
    report = json.loads((ws / "rounds" / "2" / "labelstudio_report.json").read_text())
    assert [
        (c["sample_id"], c["queued_round"], c["ingested_label"], c["label_studio_label"])
        for c in report["late_changes"]
    ] == [(changed, 0, truth[changed], other)]
    assert Manifest.load(ws / "data" / "manifest.csv").samples[changed].label == truth[changed]
