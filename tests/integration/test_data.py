"""The data layer on generated images of every format and mode, and on broken files."""

from __future__ import annotations

import os
import subprocess
import sys

from activelearn.config import Config, DataConfig
from activelearn.core.faults import VARIABLE
from activelearn.data.datasets import WRITING, write_digits
from activelearn.data.images import (
    list_files,
)
from activelearn.pipeline.run import prepare_data


def test_a_demo_write_killed_midway_is_written_whole_by_the_next_run(tmp_path, monkeypatch):
    ws, whole = tmp_path / "campaign", tmp_path / "whole"
    write = [sys.executable, "-m", "activelearn.data.datasets", "digits", "--root", str(ws)]
    killed = subprocess.run(write, env=os.environ | {VARIABLE: "digits:900"})
    assert killed.returncode == -9  # SIGKILLed before the 901st of 1,797 images
    assert list_files(ws / "data" / "raw") and not (ws / "data" / "pool_labels.csv").exists()

    monkeypatch.chdir(ws)
    cfg = Config(data=DataConfig(demo="digits", image_size=[8, 8], channels=1), seed=1)
    assert prepare_data(cfg)["pool"] == 1418  # the rerun, with another seed than the kill's
    write_digits(whole, seed=1)
    written = {p.relative_to(ws) for p in list_files(ws) if p.name != "manifest.csv"}
    assert written == {p.relative_to(whole) for p in list_files(whole)}  # nothing left over
    labels = "data/pool_labels.csv"
    assert (ws / labels).read_text() == (whole / labels).read_text()
    assert not (ws / WRITING).exists()
