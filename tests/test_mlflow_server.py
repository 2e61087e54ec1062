"""The same round logged to a real `mlflow server` on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import pytest

from activelearn.rounds import run_round
from tests.test_rounds import make_config, make_workspace

pytestmark = pytest.mark.integration


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


def test_round_logs_to_a_real_mlflow_server(
    tmp_path, mlflow_server, monkeypatch, bentoml_home, tiny_model_cfg
):
    from mlflow import MlflowClient

    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    ws = tmp_path / "campaign"
    make_workspace(ws)
    state = run_round(replace(make_config(ws, tiny_model_cfg), round=0))
    run_id = state["phases"]["track"]["run_id"]

    client = MlflowClient(tracking_uri=url)
    run = client.get_run(run_id)
    assert run.info.run_name == "round-0" and run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] > 0
    assert "queue.png" in {a.path for a in client.list_artifacts(run_id)}
    assert list(artifacts.rglob("classifier.bentomodel"))  # stored by the server
    assert not (ws / "mlruns.db").exists()  # nothing went to the local store
    versions = client.search_model_versions("name = 'test-campaign-classifier'")
    assert [v.run_id for v in versions] == [run_id]
