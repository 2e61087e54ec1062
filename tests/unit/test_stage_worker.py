"""The stage worker: stage commands run inside the process that runs DVC's repro.

A shell command that runs stage commands one after the other stands in for DVC's
repro here; tests/integration/test_pipeline.py runs the real one.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from activelearn.pipeline import worker as stage_worker
from tests.helpers import STAGE, CommandFailed, dvc_running, no_dvc_thread_left

TWO_STAGES = f"{STAGE} prepare && {STAGE} train"


def fail_at_prepare(error: BaseException, ran: list):
    def run_stage(stage: str) -> None:
        ran.append(stage)
        if stage == "prepare":
            raise error

    return run_stage


def test_stages_run_here_in_order_in_the_workspace(tmp_path):
    ran = []
    stage_worker.run_repro(
        str(tmp_path),
        lambda s: ran.append((s, os.getpid(), os.getcwd())),
        dvc_running(TWO_STAGES, tmp_path),
    )
    here = (os.getpid(), str(tmp_path))
    assert ran == [("prepare", *here), ("train", *here)]
    assert os.getcwd() != str(tmp_path)  # the worker went back
    assert no_dvc_thread_left()


def test_each_stage_served_is_timed(tmp_path):
    seconds = stage_worker.run_repro(
        str(tmp_path),
        lambda s: time.sleep(0.3 if s == "train" else 0),
        dvc_running(TWO_STAGES, tmp_path),
    )
    assert set(seconds) == {"prepare", "train"}
    assert seconds["train"] >= 0.3 > seconds["prepare"]


def test_a_failing_stage_fails_with_its_own_message(tmp_path):
    ran = []
    with pytest.raises(stage_worker.StageFailed, match=r"^stage prepare: ValueError: no labels$"):
        stage_worker.run_repro(
            str(tmp_path),
            fail_at_prepare(ValueError("no labels"), ran),
            dvc_running(TWO_STAGES, tmp_path),
        )
    assert ran == ["prepare"]  # `&&` (DVC) stopped at the failure


def test_a_stage_exit_message_reaches_the_command_and_the_caller(tmp_path, capfd):
    stop = SystemExit("no class folders in data/raw/")
    with pytest.raises(stage_worker.StageFailed, match="stage prepare: no class folders"):
        stage_worker.run_repro(
            str(tmp_path), fail_at_prepare(stop, []), dvc_running(TWO_STAGES, tmp_path)
        )
    assert "stage prepare: no class folders in data/raw/" in capfd.readouterr().err


def test_a_stage_from_another_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = []
    with pytest.raises(stage_worker.StageFailed, match=f"serves {tmp_path}, not {elsewhere}"):
        stage_worker.run_repro(
            str(tmp_path), ran.append, dvc_running(f"cd {elsewhere} && {STAGE} prepare", tmp_path)
        )
    assert ran == []


def test_an_unreachable_worker_is_an_error(tmp_path, capsys):
    assert stage_worker.ask_worker(str(tmp_path / "gone"), "train") == 1
    assert "unreachable" in capsys.readouterr().err


def test_an_interrupted_stage_stops_dvc_too(tmp_path):
    ran = []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the stage runs in this process
        stage_worker.run_repro(
            str(tmp_path),
            fail_at_prepare(KeyboardInterrupt(), ran),
            dvc_running(TWO_STAGES, tmp_path),
        )
    assert ran == ["prepare"] and no_dvc_thread_left()


def test_a_stage_command_that_dies_mid_stage_leaves_the_worker_standing(tmp_path):
    """DVC's stage command killed meanwhile: the worker's reply finds no one, and DVC's
    own failure is what the caller gets."""
    client = (
        "import json, os, socket; s = socket.socket(socket.AF_UNIX); "
        f"s.connect(os.environ['{stage_worker.VARIABLE}']); "
        "s.sendall(json.dumps({'stage': 'train', 'cwd': os.getcwd()}).encode() + b'\\n'); "
        "os._exit(137)"
    )
    ran = []
    with pytest.raises(CommandFailed, match="137"):
        stage_worker.run_repro(
            str(tmp_path),
            lambda s: ran.append(time.sleep(0.5)),
            dvc_running(f'{sys.executable} -c "{client}"', tmp_path),
        )
    assert len(ran) == 1
