"""Set a workspace up and retrain it through `dvc repro`: the main job of a round's
train phase.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from activelearn.config import Config
from activelearn.data.datasets import WRITING, write_digits
from activelearn.data.images import list_files, preprocessing, split_test_set
from activelearn.data.source import take_source
from activelearn.errors import ConfigError, PipelineFailed
from activelearn.pipeline import stages
from activelearn.pipeline import worker as stage_worker
from activelearn.workspace.layout import METRICS, PARAMS, SOURCE_RECORD
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.repo import dvc_repo, init_workspace, python_environment

log = logging.getLogger(__name__)


def prepare_data(cfg: Config, pool_required: bool = False) -> dict[str, int]:
    """The dataset source's new files or the demo data, if asked for; the test set drawn
    at set-up; the pool manifest; in the workspace. A round needs a pool to select from
    (`pool_required`); a retrain does not."""
    data = cfg.data
    if data.source:  # before anything reads the layout: it fills it
        take_source(
            data.source,
            SOURCE_RECORD,
            raw_dir=data.raw_dir,
            test_dir=data.test_dir,
            pool_dir=data.pool_dir,
            pool_labels=data.pool_labels,
        )
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
        raise ConfigError(
            f"no labeled images in {Path(data.raw_dir).resolve()}: put them in "
            f"{data.raw_dir}/<class>/<file> of the workspace, or use the demo data (data=digits)"
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
    if pool_required and not Path(data.pool_dir).is_dir():
        raise ConfigError(
            f"no pool folder {Path(data.pool_dir).resolve()}: put the unlabeled images under "
            f"{data.pool_dir}/ of the workspace (nested folders allowed), or set data.pool_dir"
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


def _in_full(err: BaseException) -> str:
    """An error and the errors it came from, as DVC's command line prints them."""
    said = []
    while err is not None:
        said.append(str(err))
        err = err.__cause__ or err.__context__
    return ": ".join(s for s in said if s)
