"""The jobs of a Hydra sweep (`python -m activelearn -m ...`), one campaign each.

A job's folder is named by its settings (`hydra.sweep.subdir` in conf/config.yaml), e.g.
`<sweep dir>/seed=0,strategy=margin/`, and holds its workspace `campaign/`.
"""

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from activelearn.config import ConfigError, check_config

log = logging.getLogger("activelearn")


def job_folder(overrides: str) -> str:
    """A job's folder name from its overrides: a `/` in a value made `_`, so each job is
    one folder of the sweep; `defaults` for a job without any."""
    return overrides.replace("/", "_") or "defaults"


def job_workspace(hydra_cfg: DictConfig) -> Path:
    """The campaign workspace of a sweep's job, in the job's folder."""
    return Path(hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir, "campaign")


class CheckJobs(Callback):
    """Checks every job of a sweep before the first one runs: a setting that cannot work
    in one job stops the sweep before any work, not after the jobs before it ran."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from activelearn.scoring import StrategyError

        loader = GlobalHydra.instance().config_loader()
        swept = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        swept += config.hydra.overrides.task
        overrides = OverridesParser.create(loader).parse_overrides(swept)
        errors = []  # each once, though many jobs share a bad setting
        for job in BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]:
            try:
                check_job(loader.load_sweep_config(config, list(job)))
            except (ConfigError, StrategyError) as err:
                if str(err) not in errors:
                    errors.append(str(err))
        for error in errors:
            log.error("%s", error)
        if errors:
            sys.exit(1)  # not an exception: Hydra turns a callback's into a warning


def check_job(job_cfg: DictConfig) -> None:
    """Check one job's composed config (Hydra's node included), as its run will see it."""
    workspace = job_workspace(job_cfg.hydra)
    with read_write(job_cfg), open_dict(job_cfg):
        del job_cfg["hydra"]
    check_config(replace(OmegaConf.to_object(job_cfg), workspace=str(workspace)))
