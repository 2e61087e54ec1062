"""Run the DVC stages inside the round's own process, so TensorFlow is imported once.

DVC still decides which stages run and records them in dvc.lock, and it runs in this
process too (its Python API, in a thread), so no `dvc` start-up is paid per round. What
changes is where a stage runs: `run_repro` gives DVC's stage commands
`ACTIVELEARN_STAGE_WORKER`, naming a Unix socket, and each stage command
(`python -m activelearn.pipeline.stages <stage>`) finding it asks this process to run the stage
and exits with the stage's status. Without the variable, as when someone runs
`dvc repro` by hand, a stage runs in its own process.

Stages run one at a time in the calling thread: DVC runs them in order anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from activelearn.errors import StageFailed

log = logging.getLogger(__name__)

VARIABLE = "ACTIVELEARN_STAGE_WORKER"
POLL_SECONDS = 0.1  # how often the worker looks whether DVC has ended


def run_repro(
    cwd: str, run_stage: Callable[[str], None], reproduce: Callable[[dict], None]
) -> dict[str, float]:
    """Call `reproduce(env)` (DVC's repro, which runs the stage commands with `env` added
    to their environment) in a thread, and serve the stages it asks for with `run_stage`
    here; the seconds each stage took. Raises what `reproduce` raised, or StageFailed
    with a failed stage's message."""
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="activelearn-") as private:  # mode 0700
        address = os.path.join(private, "stages")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(address)
            server.listen()
            server.settimeout(POLL_SECONDS)
            raised: list[BaseException] = []

            def target() -> None:
                try:
                    reproduce({VARIABLE: address})
                except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                    raised.append(err)

            dvc = threading.Thread(target=target, name="dvc-repro", daemon=True)
            dvc.start()
            failed = ""
            try:
                while dvc.is_alive():
                    try:
                        connection, _ = server.accept()
                    except TimeoutError:
                        pass  # not `continue`: CPython 3.11 lets a Ctrl-C there skip `finally`
                    else:
                        with connection:
                            connection.settimeout(None)
                            started = time.perf_counter()
                            stage, error = _serve(connection, cwd, run_stage)
                            seconds[stage] = round(time.perf_counter() - started, 3)
                            failed = error or failed
            finally:
                # Interrupted here: a stage command finds its connection, or the socket,
                # closed and fails, so DVC runs nothing more and ends.
                server.close()
                dvc.join()
    if failed:
        raise StageFailed(failed)
    if raised:
        raise raised[0]
    return seconds


def _serve(
    connection: socket.socket, cwd: str, run_stage: Callable[[str], None]
) -> tuple[str, str]:
    """Run the stage `connection` asks for and reply; the stage, and the error it ended
    with ('' if none)."""
    request = json.loads(connection.makefile("r").readline())
    stage = request["stage"]
    error = ""
    if os.path.realpath(request["cwd"]) != os.path.realpath(cwd):
        error = f"stage worker serves {cwd}, not {request['cwd']}"
    else:
        try:
            with contextlib.chdir(cwd):
                run_stage(stage)
        except SystemExit as stop:  # a stage's own clear error (e.g. no class folders)
            error = str(stop.code)
        except Exception as err:
            log.exception("stage %s failed", stage)
            error = f"{type(err).__name__}: {err}"
    reply = {"status": 1 if error else 0, "error": error}
    with contextlib.suppress(OSError):  # the command is gone (DVC stopped): it has no use for it
        connection.sendall(json.dumps(reply).encode() + b"\n")
    return stage, f"stage {stage}: {error}" if error else ""


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
