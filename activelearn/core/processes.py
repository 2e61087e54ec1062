"""Stopping a child process together with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

KILL_WAIT = 5.0  # seconds for SIGKILLed processes to be gone (it takes milliseconds)


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group `process` leads (started with `start_new_session`), give
    all of it `grace` seconds to exit, then SIGKILL what is left; returns once it is gone."""
    group = process.pid  # a session leader's group id is its pid
    for signum, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signum)
        if _gone(process, group, seconds):
            break
    process.wait()


def _gone(process: subprocess.Popen, group: int, seconds: float) -> bool:
    """Whether every member of `group` has exited within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:  # a zombie still counts as a member of its group
            _reap_orphans(group)
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _reap_orphans(group: int) -> None:
    """Reap exited members of `group` that became our children: when this process is PID 1
    (a container) or a subreaper, the leader's orphans are ours to reap. Only once the
    leader is reaped, so `Popen` keeps its exit status."""
    with contextlib.suppress(ChildProcessError):  # no such child
        while os.waitpid(-group, os.WNOHANG)[0]:
            pass
