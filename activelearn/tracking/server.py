"""An `mlflow server` for the parallel jobs of one sweep: the one writer to its sqlite
store, which parallel processes writing it themselves would lock each other out of
("database is locked").
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from activelearn.core.processes import stop_group
from activelearn.errors import ConfigError

log = logging.getLogger(__name__)

START_SECONDS = 180.0  # about 7 s on an idle machine; much more on a busy one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: str, artifacts: Path, log_file: Path) -> tuple[subprocess.Popen, str]:
    """An MLflow server on loopback over `store`, one worker (so one writer), without the
    job runner's processes; artifacts are written by the clients to `artifacts` (on this
    machine). Returns it and its URL once it answers."""
    port = free_port()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_file.open("ab") as out:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server"),
                *("--backend-store-uri", store),
                *("--default-artifact-root", str(artifacts)),
                "--no-serve-artifacts",
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    log.info("MLflow server for the sweep's jobs at %s (log: %s)", url, log_file)
                    return server, url
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise ConfigError(
                f"the MLflow server for the sweep's parallel jobs did not start in "
                f"{START_SECONDS:.0f} s: see {log_file}; or run the jobs one after another "
                "(without hydra/launcher=joblib), or set MLFLOW_TRACKING_URI to a server"
            )
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    stop_group(server, grace=10.0)
