"""The same round logged to a real `mlflow server` on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import pytest

from activelearn.rounds.campaign import run_round
from activelearn.workspace.repo import campaign_id
from tests.helpers import make_config, make_workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            output = (tmp_path / "mlflow-server.log").read_text()[-2000:]
            pytest.fail(f"mlflow server did not start: {output}")
        time.sleep(0.5)
    yield url, tmp_path / "server-artifacts"
    os.killpg(server.pid, 15)
    server.wait(timeout=30)


def test_rounds_log_to_a_real_mlflow_server_one_campaign_apart_from_another(
    tmp_path, mlflow_server, monkeypatch, bentoml_home, tiny_model_cfg
):
    from mlflow import MlflowClient

    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    runs = {}
    for name in ("a", "b"):  # two campaigns in folders of the same name, one experiment
        ws = tmp_path / name / "campaign"
        make_workspace(ws)
        cfg = make_config(ws, tiny_model_cfg)
        cfg = replace(cfg, round=0, tracking=replace(cfg.tracking, experiment="shared"))
        runs[campaign_id(ws)] = run_round(cfg).track.run_id
        assert not (ws / "mlruns.db").exists()  # nothing went to the local store
    assert len(runs) == 2

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("shared").experiment_id
    assert len(client.search_runs([experiment])) == 4  # a campaign run and a round run each
    for campaign, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.info.run_name == "round-0" and run.info.status == "FINISHED"
        assert run.data.metrics["test_accuracy"] > 0
        assert "queue.png" in {a.path for a in client.list_artifacts(run_id)}
        parent = client.get_run(run.data.tags["mlflow.parentRunId"])
        assert parent.info.run_name == campaign  # never the other campaign's run
        versions = client.search_model_versions(f"name = '{campaign}-classifier'")
        assert [v.run_id for v in versions] == [run_id]
    assert len(list(artifacts.rglob("classifier.bentomodel"))) == 2  # stored by the server
