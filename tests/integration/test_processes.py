"""Stopping a process group: the leader's children too, each given the grace period."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from activelearn.core.processes import stop_group


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan waits for its reaper once killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_group(script: str) -> subprocess.Popen:
    process = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    time.sleep(0.5)  # the traps are set
    return process


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    pid_file = tmp_path / "child.pid"
    leader = start_group(f"sh -c 'trap \"\" TERM; echo $$ > {pid_file}; sleep 60' & sleep 60")
    started = time.monotonic()
    stop_group(leader, grace=1.0)
    assert 1.0 <= time.monotonic() - started < 10
    child = int(pid_file.read_text())
    assert not running(child)
    assert leader.returncode is not None


def test_a_child_still_shutting_down_gets_the_grace_period(tmp_path):
    done = tmp_path / "child-finished"
    # The leader exits at once on SIGTERM; its child needs half a second to finish its work.
    leader = start_group(
        f"sh -c 'trap \"sleep 0.5; touch {done}; exit 0\" TERM; sleep 60 & wait' & wait"
    )
    stop_group(leader, grace=10.0)
    assert done.exists()
