"""A campaign workspace: the folder with data/, model/, dvc.yaml and params.yaml.

`run_pipeline(cfg)` is the main job for now: it sets the workspace up (git + DVC,
demo data, the fixed test split, the pool manifest), writes params.yaml from the
Hydra config and retrains through `dvc repro`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from activelearn import stage_worker, stages
from activelearn.config import Config, ConfigError
from activelearn.data import list_files, split_test_set
from activelearn.datasets import WRITING, write_digits
from activelearn.files import PARTIAL, write_atomic
from activelearn.manifest import Manifest
from activelearn.stages import METRICS, PARAMS, preprocessing

log = logging.getLogger(__name__)

PIPELINE = (
    Path(__file__).resolve().parents[1] / "dvc.yaml"
)  # the project's, copied into new workspaces


CAMPAIGN_ID = "campaign.id"  # the workspace's campaign id (committed with every round)
LOCK = ".activelearn.lock"  # held by the run working in the workspace

# Run state that is not part of a round's commit (DVC adds its own outs to .gitignore),
# files a killed process left half-written, and the default pool (data, not results).
WORKSPACE_GITIGNORE = f"""\
/{LOCK}
/rounds/*/state.json
/rounds/*/scores.csv
/rounds/serving-retrain.log
/rounds/serving-annotations.json
/data/pool/
/data/pool_labels.csv
*{PARTIAL}
/mlruns.db
/mlartifacts/
/.bentoml/
"""


class PipelineFailed(RuntimeError):
    """`dvc repro` failed; the message holds what DVC or the failed stage said."""


class WorkspaceBusy(RuntimeError):
    """Another run is working in the workspace."""


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
    if not (ws / "dvc.yaml").exists():
        shutil.copyfile(PIPELINE, ws / "dvc.yaml")
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


def prepare_data(cfg: Config) -> dict[str, int]:
    """Demo data if asked for, the test set drawn at set-up, the pool manifest; in the workspace."""
    data = cfg.data
    if data.demo and (Path(WRITING).exists() or not list_files(data.raw_dir)):  # or killed midway
        write_digits(
            ".",
            seed=cfg.seed,
            per_class=data.seed_per_class,
            test_fraction=data.test_fraction,
            raw_dir=data.raw_dir,
            pool_dir=data.pool_dir,
            test_dir=data.test_dir,
            pool_labels=data.pool_labels,
        )
    if not list_files(data.raw_dir) and not list_files(data.test_dir):
        raise SystemExit(
            f"no labeled images in {Path(data.raw_dir).resolve()}: put them in "
            f"{data.raw_dir}/<class>/<file>, or use the demo data (data=digits)"
        )
    # The test set is drawn at set-up only (the manifest is saved last): images labeled
    # in rounds were chosen by the model, and a test set drawn from them would be biased.
    setting_up = not Path(data.manifest).exists()
    if setting_up:
        split_test_set(data.raw_dir, data.test_dir, data.test_fraction, cfg.seed)
    if list_files(data.raw_dir) and not list_files(data.test_dir):
        hold_out = ", or label at least 2 images per class so one is held out" if setting_up else ""
        raise ConfigError(
            f"no test images in {Path(data.test_dir).resolve()} to evaluate on: put a fixed "
            f"test set into {data.test_dir}/<class>/{hold_out}"
        )
    manifest = Manifest.load(data.manifest)
    added = manifest.sync_pool(data.pool_dir, preprocessing(cfg))
    manifest.save()
    counts = manifest.counts()
    log.info("pool manifest: %s (new: %s)", counts, added or "none")
    return counts


def write_params(cfg: Config) -> None:
    """The DVC params of the workspace: the parts of the config the stages read."""
    conf = OmegaConf.structured(cfg)
    params = {key: conf[key] for key in ("data", "model", "seed", "round")}
    PARAMS.write_text(OmegaConf.to_yaml(OmegaConf.create(params)))


def run_pipeline(cfg: Config) -> dict:
    """Set the workspace up and retrain through `dvc repro`; returns the test metrics."""
    ws = Path(cfg.workspace).resolve()
    init_workspace(ws)
    with contextlib.chdir(ws):
        if cfg.round is None and PARAMS.exists():  # a plain retrain stays at its round
            cfg = replace(cfg, round=stages.load_params().round)
        prepare_data(cfg)
        write_params(cfg)
        repro(ws)
        return json.loads(METRICS.read_text())


def repro(ws: Path) -> dict[str, float]:
    """`dvc repro` in the workspace: only stages whose deps or params changed run, and
    they run in this process (`stage_worker`), which imports TensorFlow once. Returns the
    seconds of each stage run, and DVC's own (the rest: its checks, hashes, cache and
    lock, and starting the stage commands) under `dvc`."""
    from dvc.exceptions import DvcException

    def reproduce(stage_env: dict[str, str]) -> None:
        with dvc_repo(ws) as repo:
            repo.reproduce(run_env=python_environment() | stage_env)

    started = time.perf_counter()
    try:
        seconds = stage_worker.run_repro(str(ws), stages.run, reproduce)
    except (stage_worker.StageFailed, DvcException) as err:
        raise PipelineFailed(f"`dvc repro` failed in {ws}: {_in_full(err)}") from err
    dvc = time.perf_counter() - started - sum(seconds.values())
    return seconds | {"dvc": round(dvc, 3)}


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


def _in_full(err: BaseException) -> str:
    """An error and the errors it came from, as DVC's command line prints them."""
    said = []
    while err is not None:
        said.append(str(err))
        err = err.__cause__ or err.__context__
    return ": ".join(s for s in said if s)
