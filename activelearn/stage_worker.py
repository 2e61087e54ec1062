"""Run the DVC stages inside the round's own process, so TensorFlow is imported once.

`dvc repro` still decides which stages run and records them in dvc.lock. What changes is
where a stage runs: `run_repro` starts `dvc repro` with `ACTIVELEARN_STAGE_WORKER` naming
a Unix socket, and each stage command (`python -m activelearn.stages <stage>`) finding
it asks this process to run the stage and exits with the stage's status. Without the
variable, as when someone runs `dvc repro` by hand, a stage runs in its own process.

Stages run one at a time in the calling thread: `dvc repro` runs them in order anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable

log = logging.getLogger(__name__)

VARIABLE = "ACTIVELEARN_STAGE_WORKER"
POLL_SECONDS = 0.1  # how often the worker looks whether `dvc repro` has ended


def run_repro(
    cmd: list[str], cwd: str, env: dict, run_stage: Callable[[str], None], **popen
) -> int:
    """Run `cmd` (`dvc repro`) and serve its stages with `run_stage`; returns its exit code.
    `popen`: more arguments for the command's process, e.g. where its output goes."""
    with tempfile.TemporaryDirectory(prefix="activelearn-") as private:  # mode 0700
        address = os.path.join(private, "stages")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(address)
            server.listen()
            server.settimeout(POLL_SECONDS)
            process = subprocess.Popen(cmd, cwd=cwd, env=env | {VARIABLE: address}, **popen)
            try:
                while process.poll() is None:
                    try:
                        connection, _ = server.accept()
                    except TimeoutError:
                        continue
                    with connection:
                        connection.settimeout(None)
                        _serve(connection, cwd, run_stage)
            finally:
                if process.poll() is None:  # interrupted or failed here: stop dvc too
                    process.terminate()
                process.wait()
            return process.returncode


def _serve(connection: socket.socket, cwd: str, run_stage: Callable[[str], None]) -> None:
    request = json.loads(connection.makefile("r").readline())
    stage = request["stage"]
    if os.path.realpath(request["cwd"]) != os.path.realpath(cwd):
        reply = {"status": 1, "error": f"stage worker serves {cwd}, not {request['cwd']}"}
    else:
        try:
            with contextlib.chdir(cwd):
                run_stage(stage)
            reply = {"status": 0}
        except SystemExit as stop:  # a stage's own clear error (e.g. no class folders)
            reply = {"status": 1, "error": str(stop.code)}
        except Exception as err:
            log.exception("stage %s failed", stage)
            reply = {"status": 1, "error": f"{type(err).__name__}: {err}"}
    with contextlib.suppress(OSError):  # the command is gone (dvc stopped): it has no use for it
        connection.sendall(json.dumps(reply).encode() + b"\n")


def ask_worker(address: str, stage: str) -> int:
    """The stage command's side: have the worker run `stage`; its exit status."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(address)
        except OSError as err:
            print(f"stage worker at {address} ({VARIABLE}) unreachable: {err}", file=sys.stderr)
            return 1
        request = {"stage": stage, "cwd": os.getcwd()}
        connection.sendall(json.dumps(request).encode() + b"\n")
        line = connection.makefile("r").readline()
    if not line:
        print(f"stage worker stopped before stage {stage} finished", file=sys.stderr)
        return 1
    reply = json.loads(line)
    if reply.get("error"):
        print(f"stage {stage}: {reply['error']}", file=sys.stderr)
    return reply["status"]
