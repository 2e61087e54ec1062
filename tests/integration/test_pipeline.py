"""`dvc repro` end to end in a temporary git repo on tiny generated data (real DVC)."""

import contextlib
import csv
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from activelearn.config import Config, DataConfig
from activelearn.data.images import list_files
from activelearn.pipeline import stages
from activelearn.pipeline import worker as stage_worker
from activelearn.pipeline.run import PipelineFailed, run_pipeline, write_params
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.repo import python_environment
from tests.helpers import write_class_folders


def dvc_status(ws) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=ws,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_repro_trains_evaluates_and_reruns_only_changed_stages(
    tmp_path, bentoml_home, tiny_model_cfg, monkeypatch
):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=15)
    write_class_folders(ws / "data" / "pool" / "batch1", per_class=4, seed=3)
    (ws / "data" / "pool" / "broken.png").write_bytes(b"\x89PNG not really")
    cfg = Config(
        data=DataConfig(image_size=[12, 12], channels=1, test_fraction=0.2),
        model=tiny_model_cfg,
        workspace=str(ws),
    )

    ran_here = []  # the stage worker runs the stages in this process
    monkeypatch.setattr(stages, "run", lambda s, run=stages.run: (ran_here.append(s), run(s)))
    metrics = run_pipeline(cfg)
    assert ran_here == ["prepare", "train", "evaluate"]
    assert metrics["accuracy"] >= 0.8
    assert metrics["test_images"] == 9 and metrics["labeled_images"] == 36
    assert (ws / "dvc.lock").is_file() and (ws / "model" / "classifier.bentomodel").is_file()
    assert (ws / "evaluation" / "confusion.csv").read_text().startswith("actual,predicted")
    manifest = Manifest.load(ws / "data" / "manifest.csv")
    assert manifest.counts()["pool"] == 12
    assert manifest.samples["broken.png"].state == "rejected"
    assert dvc_status(ws) == {}  # everything up to date

    test_set = list_files(ws / "data" / "test")
    prepared = (ws / "prepared" / "train.npz").stat().st_mtime_ns
    model = (ws / "model" / "classifier.bentomodel").read_bytes()

    cfg.model.dense_units = 24  # one training param changes
    with contextlib.chdir(ws):
        write_params(cfg)
    assert set(dvc_status(ws)) == {"train"}  # prepare is untouched by a model param

    run_pipeline(cfg)
    assert ran_here[3:] == ["train", "evaluate"]
    assert (ws / "prepared" / "train.npz").stat().st_mtime_ns == prepared
    assert (ws / "model" / "classifier.bentomodel").read_bytes() != model
    assert list_files(ws / "data" / "test") == test_set  # never redrawn
    assert dvc_status(ws) == {}

    # By hand, without the worker, each stage runs in its own process: same model, same metrics.
    metrics = (ws / "evaluation" / "metrics.json").read_text()
    env = python_environment({k: v for k, v in os.environ.items() if k != stage_worker.VARIABLE})
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q", "-f"], cwd=ws, env=env, check=True)
    assert (ws / "evaluation" / "metrics.json").read_text() == metrics


def test_the_pipeline_follows_the_configured_data_folders(tmp_path, bentoml_home, tiny_model_cfg):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "labeled", per_class=10)
    (ws / "labeled" / "class1" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n cut off")
    cfg = Config(
        data=DataConfig(image_size=[12, 12], channels=1, raw_dir="labeled", test_dir="held_out"),
        model=tiny_model_cfg,
        workspace=str(ws),
    )
    metrics = run_pipeline(cfg)
    assert metrics["labeled_images"] + metrics["test_images"] == 30  # the torn one skipped
    with (ws / "prepared" / "rejected.csv").open() as f:
        (rejected,) = list(csv.DictReader(f))
    assert rejected["path"].endswith("class1/torn.png") and rejected["split"] in ("train", "test")
    report = json.loads((ws / "evaluation" / "report.json").read_text())
    assert set(report["per_class"]) == {"class0", "class1", "class2"}
    assert sum(map(sum, report["confusion_matrix"])) == metrics["test_images"]
    assert list_files(ws / "held_out") and not (ws / "data" / "raw").exists()
    assert dvc_status(ws) == {}

    write_class_folders(ws / "labeled", per_class=1, seed=9)  # a new label: prepare is stale
    assert set(dvc_status(ws)) == {"prepare"}


def test_a_workspace_from_an_older_version_gets_the_missing_ignore_lines(tmp_path):
    from activelearn.workspace.layout import LOCK
    from activelearn.workspace.repo import init_workspace

    ws = tmp_path / "campaign"
    ws.mkdir()
    (ws / ".gitignore").write_text("/mlruns.db\n!/data/pool/\nnotes/")  # no lock, no newline
    init_workspace(ws)
    init_workspace(ws)  # once is enough
    lines = (ws / ".gitignore").read_text().splitlines()
    assert lines[:3] == ["/mlruns.db", "!/data/pool/", "notes/"]  # theirs kept, in order
    assert lines.count(f"/{LOCK}") == 1 and lines.count("/mlruns.db") == 1
    assert "/data/pool/" not in lines  # they chose to keep the pool in git
    (ws / LOCK).touch()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"],
        cwd=ws,
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"!! {LOCK}" in status.stdout


def test_dvc_commands_people_run_in_a_workspace_send_no_usage_report(tmp_path, monkeypatch):
    """The round runs DVC through its Python API, which sends no report; a `dvc` command
    someone types in the workspace would, unless the workspace's DVC config says no. A
    plain DVC repo beside it shows the collector would hear a report."""
    import http.server
    import threading
    import time

    from activelearn.workspace.repo import init_workspace

    reports = []

    class Collector(http.server.BaseHTTPRequestHandler):  # stands in for analytics.dvc.org
        def do_POST(self):
            reports.append(self.path)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # a person's shell: no DVC_NO_ANALYTICS (activelearn sets it for its own processes)
    env = {k: v for k, v in os.environ.items() if k != "DVC_NO_ANALYTICS"}
    env |= {"DVC_ANALYTICS_ENDPOINT": f"http://127.0.0.1:{server.server_port}/"}
    ws, plain = tmp_path / "campaign", tmp_path / "plain"
    try:
        init_workspace(ws)
        plain.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=plain, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=plain, env=env, check=True)
        time.sleep(5)  # DVC reports from a daemon it starts at exit
        heard_from_plain = len(reports)
        subprocess.run(
            ["dvc", "config", "--list"], cwd=ws, env=env, check=True, capture_output=True
        )
        time.sleep(5)
    finally:
        server.shutdown()
    assert heard_from_plain > 0  # the collector hears DVC when analytics are on
    assert len(reports) == heard_from_plain  # and nothing from the workspace


def test_a_test_set_of_unreadable_files_stops_the_pipeline(tmp_path, bentoml_home, tiny_model_cfg):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=4)
    for name in ("a", "b"):  # files the set-up finds, but that no decoder opens
        (ws / "data" / "test" / "class0").mkdir(parents=True, exist_ok=True)
        (ws / "data" / "test" / "class0" / f"{name}.png").write_bytes(b"\x89PNG cut off")
    cfg = Config(data=DataConfig(image_size=[12, 12], channels=1), model=tiny_model_cfg)
    with pytest.raises(PipelineFailed, match=r"no readable image in data/test/ .*rejected\.csv"):
        run_pipeline(replace(cfg, workspace=str(ws)))
    assert not (ws / "evaluation" / "metrics.json").exists()


def test_a_pipeline_dvc_cannot_run_fails_with_dvcs_own_words(tmp_path, tiny_model_cfg):
    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=4)
    (ws / "dvc.yaml").write_text("stages:\n  train:\n    deps: [nowhere]\n")  # no cmd
    cfg = Config(data=DataConfig(image_size=[12, 12], channels=1), model=tiny_model_cfg)
    with pytest.raises(PipelineFailed, match=r"failed in .*: .*dvc\.yaml"):
        run_pipeline(replace(cfg, workspace=str(ws)))


def test_a_plain_retrain_stays_at_the_workspaces_round(tmp_path, bentoml_home, tiny_model_cfg):
    from activelearn.learner.classifier import Classifier

    ws = tmp_path / "campaign"
    write_class_folders(ws / "data" / "raw", per_class=6)
    cfg = Config(data=DataConfig(image_size=[12, 12], channels=1), model=tiny_model_cfg)
    run_pipeline(replace(cfg, workspace=str(ws), round=2))
    model = ws / "model" / "classifier.bentomodel"
    trained = model.stat().st_mtime_ns
    run_pipeline(replace(cfg, workspace=str(ws)))  # `python -m activelearn`, no round=
    assert Classifier.load(model).version == "round-2"
    assert model.stat().st_mtime_ns == trained  # nothing changed, so nothing retrained
