"""Fault injection for the crash tests: `ACTIVELEARN_KILL_AT=<point>` SIGKILLs the
process when it reaches that point, as a power cut or an OOM kill would."""

import os
import signal

VARIABLE = "ACTIVELEARN_KILL_AT"


def kill_point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
