"""A campaign workspace as a repository: git + DVC set up, the campaign id, the lock."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from activelearn.core.files import PARTIAL, write_atomic
from activelearn.errors import WorkspaceBusy
from activelearn.workspace.layout import (
    CAMPAIGN_ID,
    LOCK,
    PIPELINE,
    ROUNDS,
    SERVING_ANNOTATIONS,
    SERVING_RETRAIN_LOG,
)

OLD_STAGES = "activelearn.stages "  # the stage commands' module in older workspaces

# Run state that is not part of a round's commit (DVC adds its own outs to .gitignore),
# files a killed process left half-written, and the default pool (data, not results).
WORKSPACE_GITIGNORE = f"""\
/{LOCK}
/{ROUNDS}/*/state.json
/{ROUNDS}/*/scores.csv
/{SERVING_RETRAIN_LOG}
/{SERVING_ANNOTATIONS}
/data/pool/
/data/pool_labels.csv
*{PARTIAL}
/mlruns.db
/mlartifacts/
/.bentoml/
/.cache/
"""


@contextlib.contextmanager
def workspace_lock(ws: Path) -> Iterator[None]:
    """One run at a time in a workspace: a second one would read the first one's
    half-done round. The lock goes with the process, however it ends (SIGKILL too)."""
    ws.mkdir(parents=True, exist_ok=True)
    with open(ws / LOCK, "a") as held:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(
                f"another activelearn run is working in {ws}: let it finish (or stop it), "
                "then run again"
            ) from None
        yield


def python_environment(base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`base` with this interpreter first on PATH: commands that call `python` (the DVC
    stages, a retrain) get the one with activelearn installed."""
    return {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}


def _run(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True)


def campaign_id(ws: Path) -> str:
    """The campaign's name in MLflow, made once with the workspace: unique, so campaigns
    that share a tracking server never resume each other's runs."""
    path = ws / CAMPAIGN_ID
    if not path.exists():
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", ws.name).strip("-") or "campaign"
        write_atomic(path, f"{name}-{secrets.token_hex(4)}\n")
    return path.read_text().strip()


def init_workspace(ws: Path) -> None:
    """Make `ws` its own git + DVC repository with the pipeline, if it is not one yet."""
    ws.mkdir(parents=True, exist_ok=True)
    campaign_id(ws)
    if not (ws / ".git").exists() and not (ws / ".dvc").is_dir():
        _run("git", "init", "-q", cwd=ws)
        _run("git", "config", "user.name", "activelearn", cwd=ws)
        _run("git", "config", "user.email", "activelearn@localhost", cwd=ws)
    if not (ws / ".dvc").is_dir():
        with dvc_repo(ws, init=True) as repo, repo.config.edit() as config:
            config["core"]["analytics"] = False  # for `dvc` commands people run here
        with (ws / ".dvcignore").open("a") as f:  # not part of `dvc add data/raw`
            f.write(f"*{PARTIAL}\n")
    pipeline = ws / "dvc.yaml"
    if not pipeline.exists():
        shutil.copyfile(PIPELINE, pipeline)
    elif OLD_STAGES in (text := pipeline.read_text()):  # made before the stages moved
        write_atomic(pipeline, text.replace(OLD_STAGES, "activelearn.pipeline.stages "))
    _ignore_in_git(ws / ".gitignore")


def _ignore_in_git(ignore: Path) -> None:
    """Add the lines of WORKSPACE_GITIGNORE that `ignore` lacks (a workspace made by an
    older version), leaving alone the ones someone negated (`!line`)."""
    text = ignore.read_text() if ignore.exists() else ""
    have = set(text.splitlines())
    missing = [x for x in WORKSPACE_GITIGNORE.splitlines() if not {x, f"!{x}"} & have]
    if missing:
        with ignore.open("a") as f:
            f.write("\n" * (text != "" and not text.endswith("\n")))  # theirs stays a line
            f.write("".join(f"{line}\n" for line in missing))


@contextlib.contextmanager
def dvc_repo(ws: Path, init: bool = False) -> Iterator:
    """DVC's Python API on the workspace (made a DVC repository first with `init`),
    without a `dvc` process to start. Its progress messages are left out, as `dvc -q`
    would; its warnings still show."""
    from dvc.repo import Repo

    for name in ("dvc", "dvc_data", "dvc_objects"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with Repo.init(str(ws)) if init else Repo(str(ws)) as repo:
        yield repo
