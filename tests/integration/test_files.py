"""Atomic writes: a file is replaced whole or not at all, and leftovers are never committed."""

from __future__ import annotations

import subprocess
import sys

from activelearn.core.files import PARTIAL
from activelearn.workspace.repo import init_workspace


def test_what_a_killed_write_leaves_in_a_workspace_is_ignored_by_git_and_dvc(tmp_path):
    ws = tmp_path / "campaign"
    init_workspace(ws)
    leftovers = [f"rounds/2/.state.json.k3j2{PARTIAL}", f"data/raw/cat/.a.png{PARTIAL}"]
    for name in leftovers:
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text("half")
    (ws / "rounds/2/queue.jsonl").write_text("{}\n")
    ignored = subprocess.run(
        ["git", "check-ignore", *leftovers, "rounds/2/queue.jsonl"],
        cwd=ws,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == leftovers  # the finished file is not ignored
    dvc = subprocess.run(
        [sys.executable, "-m", "dvc", "check-ignore", leftovers[1]], cwd=ws, capture_output=True
    )
    assert dvc.returncode == 0  # not hashed into data/raw by `dvc add`
