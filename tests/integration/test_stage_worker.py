"""The stage worker: stage commands run inside the process that runs DVC's repro.

A shell command that runs stage commands one after the other stands in for DVC's
repro here; tests/integration/test_pipeline.py runs the real one.
"""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from activelearn.pipeline import worker as stage_worker
from tests.helpers import STAGE, dvc_running, no_dvc_thread_left


def test_an_interrupt_between_stages_stops_dvc_before_the_next(tmp_path):
    """Ctrl-C while DVC, not a stage, is at work: the next stage command finds no worker
    (rather than waiting for good on a socket no one reads) and DVC ends."""
    threading.Timer(0.5, _thread.interrupt_main).start()
    ran = []
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        stage_worker.run_repro(
            str(tmp_path), ran.append, dvc_running(f"sleep 2; {STAGE} prepare", tmp_path)
        )
    assert ran == [] and no_dvc_thread_left()
    assert time.monotonic() - started < 30
