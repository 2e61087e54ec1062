"""Stopping a process group: the leader's children too, each given the grace period."""

from __future__ import annotations

import subprocess
import sys


def test_orphans_a_subreaper_inherits_are_reaped_not_waited_for():
    """As PID 1 of a container is: the leader's children become ours once it exits."""
    script = (
        "import ctypes, subprocess, time\n"
        "from activelearn.core.processes import stop_group\n"
        "ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER\n"
        "group = ['sh', '-c', 'sleep 60 & sleep 60 & wait']\n"
        "leader = subprocess.Popen(group, start_new_session=True)\n"
        "time.sleep(0.5)\n"
        "started = time.monotonic()\n"
        "stop_group(leader, grace=10)\n"
        "print(time.monotonic() - started)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert float(done.stdout) < 5  # not the whole grace, waiting on zombies
