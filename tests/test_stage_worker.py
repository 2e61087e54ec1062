"""The stage worker: stage commands run inside the process that started `dvc repro`.

A shell command that runs two stage commands one after the other stands in for
`dvc repro` here; tests/test_pipeline.py runs the real one.
"""

import os
import sys
import time

import pytest

from activelearn import stage_worker

STAGE = f"{sys.executable} -m activelearn.stages"
TWO_STAGES = ["sh", "-c", f"{STAGE} prepare && {STAGE} train"]
ENV = dict(os.environ)


def test_stages_run_here_in_order_in_the_workspace(tmp_path):
    ran = []
    status = stage_worker.run_repro(
        TWO_STAGES, str(tmp_path), ENV, lambda s: ran.append((s, os.getpid(), os.getcwd()))
    )
    assert status == 0
    here = (os.getpid(), str(tmp_path))
    assert ran == [("prepare", *here), ("train", *here)]
    assert os.getcwd() != str(tmp_path)  # the worker went back


def fail_at_prepare(error: BaseException):
    def run_stage(stage: str) -> None:
        if stage == "prepare":
            raise error

    return run_stage


def test_a_failing_stage_fails_the_command_with_its_message(tmp_path, capfd):
    status = stage_worker.run_repro(
        TWO_STAGES, str(tmp_path), ENV, fail_at_prepare(ValueError("no labels"))
    )
    assert status == 1  # and `train` never ran: `&&` stopped at the failure
    assert "stage prepare: ValueError: no labels" in capfd.readouterr().err


def test_a_stage_exit_message_reaches_the_command(tmp_path, capfd):
    stop = SystemExit("no class folders in data/raw/")
    assert stage_worker.run_repro(TWO_STAGES, str(tmp_path), ENV, fail_at_prepare(stop)) == 1
    assert "stage prepare: no class folders in data/raw/" in capfd.readouterr().err


def test_a_stage_from_another_folder_is_refused(tmp_path, capfd):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = ["sh", "-c", f"cd {elsewhere} && {STAGE} prepare"]
    ran = []
    assert stage_worker.run_repro(cmd, str(tmp_path), ENV, ran.append) == 1
    assert ran == []
    assert f"stage worker serves {tmp_path}, not {elsewhere}" in capfd.readouterr().err


def test_an_unreachable_worker_is_an_error(tmp_path, capsys):
    assert stage_worker.ask_worker(str(tmp_path / "gone"), "train") == 1
    assert "unreachable" in capsys.readouterr().err


def test_an_interrupted_stage_stops_the_command_too(tmp_path):
    def interrupted(stage: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the stage runs in this process

    then_more = ["sh", "-c", f"{STAGE} prepare; sleep 60"]  # would outlive a lost interrupt
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stage_worker.run_repro(then_more, str(tmp_path), ENV, interrupted)
    assert time.monotonic() - started < 30  # the command was stopped, not waited for


def test_a_stage_command_that_dies_mid_stage_leaves_the_worker_standing(tmp_path):
    """dvc killed meanwhile: the worker's reply finds no one, and the exit status tells."""
    client = (
        "import json, os, socket; s = socket.socket(socket.AF_UNIX); "
        f"s.connect(os.environ['{stage_worker.VARIABLE}']); "
        "s.sendall(json.dumps({'stage': 'train', 'cwd': os.getcwd()}).encode() + b'\\n'); "
        "os._exit(137)"
    )
    ran = []
    status = stage_worker.run_repro(
        [sys.executable, "-c", client], str(tmp_path), ENV, lambda s: ran.append(time.sleep(0.5))
    )
    assert status == 137 and len(ran) == 1
