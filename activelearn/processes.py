"""Stopping a child process together with everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group `process` leads (started with `start_new_session`), give
    all of it `grace` seconds to exit, then SIGKILL what is left and reap the leader."""
    group = process.pid  # a session leader's group id is its pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None:  # a zombie still counts as a member of its group
            _reap_orphans(group)
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    process.wait()


def _reap_orphans(group: int) -> None:
    """Reap exited members of `group` that became our children: when this process is PID 1
    (a container) or a subreaper, the leader's orphans are ours to reap. Only once the
    leader is reaped, so `Popen` keeps its exit status."""
    with contextlib.suppress(ChildProcessError):  # no such child
        while os.waitpid(-group, os.WNOHANG)[0]:
            pass
