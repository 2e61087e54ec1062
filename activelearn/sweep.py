"""The jobs of a Hydra sweep (`python -m activelearn -m ...`), one campaign each.

A job's folder is named by its settings (`hydra.sweep.subdir` in conf/config.yaml), e.g.
`<sweep dir>/seed=0,strategy=margin/`, and holds its workspace `campaign/`.
"""

from pathlib import Path

from omegaconf import DictConfig


def job_folder(overrides: str) -> str:
    """A job's folder name from its overrides: a `/` in a value made `_`, so each job is
    one folder of the sweep; `defaults` for a job without any."""
    return overrides.replace("/", "_") or "defaults"


def job_workspace(hydra_cfg: DictConfig) -> Path:
    """The campaign workspace of a sweep's job, in the job's folder."""
    return Path(hydra_cfg.sweep.dir, hydra_cfg.sweep.subdir, "campaign")
