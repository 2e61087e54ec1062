"""The jobs of a Hydra sweep (`python -m activelearn -m ...`), one campaign each.

A job's folder is named by its settings (`hydra.sweep.subdir` in conf/config.yaml), e.g.
`<sweep dir>/seed=0,strategy=margin/`, and holds its workspace `campaign/`,
`campaign.settings`, the overrides that campaign was made with, and `campaign.run_name`,
the settings the sweep varies (`strategy=margin,seed=0`): its campaign run's name in the
sweep's MLflow experiment. The jobs log into one store in the sweep folder (`mlruns.db`,
unless `tracking.uri` names another), one experiment named after the sweep folder.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from activelearn.config import Config
from activelearn.core.files import write_atomic
from activelearn.errors import ConfigError
from activelearn.rounds.checks import check_config, check_keys

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"


SETTINGS = "campaign.settings"
RUN_NAME = "campaign.run_name"  # the job's campaign run in MLflow: its swept settings


MAX_NAME_BYTES = 255  # of a folder name, on the usual file systems


def job_folder(overrides: str) -> str:
    """A job's folder name from its overrides: a `/` in a value made `_`, so each job is
    one folder of the sweep; `defaults` for a job without any."""
    return overrides.replace("/", "_") or "defaults"


def job_workspace(hydra_cfg: DictConfig) -> Path:
    """The campaign workspace of a sweep's job, in the job's folder."""
    return Path(hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir, "campaign")


def job_config(config: Config, hydra_cfg: DictConfig) -> Config:
    """A sweep job's config: its own workspace, the sweep's MLflow store (a relative
    sqlite one moves from the workspace to the sweep folder) and experiment (the sweep
    folder's name), its campaign run named by the settings the sweep varies."""
    workspace = job_workspace(hydra_cfg)
    sweep = Path(hydra_cfg.sweep.dir).resolve()
    tracking = config.tracking
    uri = tracking.uri
    if uri.startswith(SQLITE) and not uri[len(SQLITE) :].startswith("/"):
        uri = f"{SQLITE}{sweep / uri[len(SQLITE) :]}"
    record = workspace.parent / RUN_NAME
    run_name = record.read_text().strip() if record.exists() else None
    tracking = replace(
        tracking,
        uri=uri,
        experiment=tracking.experiment or sweep.name,
        run_name=tracking.run_name or run_name or job_folder(hydra_cfg.job.override_dirname),
    )
    return replace(config, workspace=str(workspace), tracking=tracking)


def check_job_folder(folder: Path, settings: str) -> None:
    """Refuse a job whose folder holds a campaign made with other settings, or whose
    settings make too long a folder name."""
    if len(folder.name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(
            f"{folder.name[:60]}...: too many overrides to name the job's folder; put the "
            "fixed ones into conf/experiment/<name>.yaml and give experiment=<name>"
        )
    record = folder / SETTINGS
    if record.exists() and (made := record.read_text().strip()) != settings:
        raise ConfigError(
            f"{folder} holds a campaign made with {made!r}, not {settings!r}: give this "
            "sweep a hydra.sweep.dir of its own"
        )


class CheckJobs(Callback):
    """Checks every job of a sweep before the first one runs: a setting that cannot work
    in one job stops the sweep before any work, not after the jobs before it ran. For
    jobs run in parallel (`hydra/launcher=joblib`), it also gives each job's TensorFlow
    its share of the cores and starts an MLflow server, the one writer to the sweep's
    sqlite store, stopped when the sweep ends."""

    def __init__(self) -> None:
        self.server = None
        self.environ: dict[str, str | None] = {}  # what it set, and what was there before

    def __getstate__(self) -> dict:
        """What goes with each job to its process (the joblib launcher sends Hydra's
        callbacks along): not the server, which the sweep's own process stops."""
        return {"server": None, "environ": {}}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from activelearn.strategies.registry import StrategyError

        loader = GlobalHydra.instance().config_loader()
        swept = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        swept += config.hydra.overrides.task
        overrides = OverridesParser.create(loader).parse_overrides(swept)
        varied = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        folders, errors = {}, []  # each error once, though many jobs share a bad setting
        for job in BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]:
            try:
                folder, settings = check_job(loader.load_sweep_config(config, list(job)))
                run_name = ",".join(o for o in job if o.partition("=")[0] in varied)
                folders[folder] = settings, run_name or folder.name
            except (ConfigError, StrategyError) as err:
                if str(err) not in errors:
                    errors.append(str(err))
        for error in errors:
            log.error("%s", error)
        if errors:
            sys.exit(1)  # not an exception: Hydra turns a callback's into a warning
        for folder, (settings, run_name) in folders.items():
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in ((SETTINGS, settings), (RUN_NAME, run_name)):
                if not (folder / name).exists():
                    write_atomic(folder / name, text + "\n")
        parallel = parallel_jobs(config.hydra.launcher, len(folders))
        if parallel > 1:
            self.share_cores(parallel)
            self.start_store(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.stop_store()
        stop_job_processes()

    def stop_store(self) -> None:
        """Stop the server and put the environment back; once, whichever comes first: the
        sweep's end, or this process's exit (Hydra skips `on_multirun_end` when a job
        failed)."""
        from activelearn.tracking.server import stop_server

        if self.server is not None:
            stop_server(self.server)
            self.server = None
        for name, before in self.environ.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        self.environ = {}

    def set_environ(self, name: str, value: str) -> None:
        self.environ.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def share_cores(self, parallel: int) -> None:
        """Each job's TensorFlow (and OpenMP) its share of the cores: more threads than
        cores only switch between each other. The job processes inherit it at start."""
        threads = str(max(1, available_cores() // parallel))
        for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
            if name not in os.environ:  # yours win
                self.set_environ(name, threads)
        log.info("%d jobs in parallel, %s threads each", parallel, threads)

    def start_store(self, config: DictConfig) -> None:
        """An MLflow server over the sweep's sqlite store, for the jobs to log through."""
        uri = config.tracking.uri
        if os.environ.get("MLFLOW_TRACKING_URI") or not uri.startswith(SQLITE):
            return  # a server already, or a store that takes writers at once
        from mlflow import MlflowClient

        from activelearn.tracking.server import start_server
        from activelearn.tracking.tracker import experiment_id

        sweep = Path(config.hydra.sweep.dir).resolve()
        sweep.mkdir(parents=True, exist_ok=True)
        path = uri[len(SQLITE) :]
        store = uri if path.startswith("/") else f"{SQLITE}{sweep / path}"
        experiment = config.tracking.experiment or sweep.name
        experiment_id(MlflowClient(tracking_uri=store), experiment, store)  # its artifacts here
        self.server, url = start_server(store, sweep / "mlartifacts", sweep / "mlflow-server.log")
        atexit.register(self.stop_store)
        self.set_environ("MLFLOW_TRACKING_URI", url)
        self.set_environ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a run's URL, each


def stop_job_processes() -> None:
    """End the joblib launcher's worker processes (a TensorFlow each), which would
    otherwise idle on for minutes after the sweep: the entry point ends with `os._exit`."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)  # none made: nothing to stop
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: DictConfig, jobs: int) -> int:
    """How many of the sweep's `jobs` the launcher runs at once: joblib's `n_jobs` (-1 =
    one per core, -2 = all but one, ...); 1 for Hydra's basic launcher."""
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n = int(launcher.get("n_jobs") or 1)
    if n < 0:
        n = max(1, available_cores() + 1 + n)
    return max(1, min(n, jobs))


def check_job(job_cfg: DictConfig) -> tuple[Path, str]:
    """Check one job's composed config (Hydra's node included), as its run will see it;
    its folder and the settings that name it."""
    workspace = job_workspace(job_cfg.hydra)
    settings = job_cfg.hydra.job.override_dirname
    with read_write(job_cfg), open_dict(job_cfg):
        del job_cfg["hydra"]
    check_keys(job_cfg)
    check_config(replace(OmegaConf.to_object(job_cfg), workspace=str(workspace)))
    check_job_folder(workspace.parent, settings)
    return workspace.parent, settings
