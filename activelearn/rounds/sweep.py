"""The jobs of a Hydra sweep (`python -m activelearn -m ...`), one campaign each.

A job's folder is named by its settings (`hydra.sweep.subdir` in conf/config.yaml), e.g.
`<sweep dir>/seed=0,strategy=margin/`, and holds its workspace `campaign/` and
`campaign.settings`, the overrides that campaign was made with.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from activelearn.core.files import write_atomic
from activelearn.errors import ConfigError
from activelearn.rounds.checks import check_config, check_keys

log = logging.getLogger(__name__)


SETTINGS = "campaign.settings"


MAX_NAME_BYTES = 255  # of a folder name, on the usual file systems


def job_folder(overrides: str) -> str:
    """A job's folder name from its overrides: a `/` in a value made `_`, so each job is
    one folder of the sweep; `defaults` for a job without any."""
    return overrides.replace("/", "_") or "defaults"


def job_workspace(hydra_cfg: DictConfig) -> Path:
    """The campaign workspace of a sweep's job, in the job's folder."""
    return Path(hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir, "campaign")


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
    in one job stops the sweep before any work, not after the jobs before it ran."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from activelearn.strategies.registry import StrategyError

        loader = GlobalHydra.instance().config_loader()
        swept = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        swept += config.hydra.overrides.task
        overrides = OverridesParser.create(loader).parse_overrides(swept)
        folders, errors = {}, []  # each error once, though many jobs share a bad setting
        for job in BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]:
            try:
                folder, settings = check_job(loader.load_sweep_config(config, list(job)))
                folders[folder] = settings
            except (ConfigError, StrategyError) as err:
                if str(err) not in errors:
                    errors.append(str(err))
        for error in errors:
            log.error("%s", error)
        if errors:
            sys.exit(1)  # not an exception: Hydra turns a callback's into a warning
        for folder, settings in folders.items():
            if not (folder / SETTINGS).exists():
                folder.mkdir(parents=True, exist_ok=True)
                write_atomic(folder / SETTINGS, settings + "\n")


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
