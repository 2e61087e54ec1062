"""Settings the types let through but that cannot work: refused at start-up,
before the workspace changes.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from activelearn.config import Config, unknown_keys
from activelearn.errors import ConfigError


def check_config(cfg: Config) -> None:
    """Fail at start-up, before the workspace changes, on settings the types let through
    but that would fail later, after work was done (or reject every pool image)."""
    from activelearn.data.images import list_files, preprocessing
    from activelearn.data.source import check_source
    from activelearn.strategies.registry import check_strategy

    check_strategy(cfg.strategy)
    check_workspace(Path(cfg.workspace))
    data, campaign = cfg.data, cfg.campaign
    try:
        preprocessing(cfg)
    except ValueError as err:
        raise ConfigError(str(err) if str(err).startswith("model.") else f"data.{err}") from err
    model = cfg.model
    if model.kind == "custom" and not model._target_:
        raise ConfigError(
            "model=custom needs model._target_: the dotted name of a function "
            "(input_shape, n_classes, ...) returning an uncompiled Keras model"
        )
    if model.kind == "backbone" and model.weights not in (None, "imagenet"):
        if not (Path(cfg.workspace) / model.weights).is_file():
            raise ConfigError(
                f"model.weights={model.weights}: no such file (relative paths are in the "
                "workspace); give the backbone's weights file, `imagenet`, or null"
            )
    if not 0 < data.test_fraction < 1 and not list_files(Path(cfg.workspace) / data.test_dir):
        raise ConfigError(
            f"data.test_fraction={data.test_fraction}: must be between 0 and 1 to draw a test "
            f"set, or put a fixed test set into {data.test_dir}/<class>/ of the workspace"
        )
    if data.source:
        check_source(data.source)
    if cfg.seed < 0:  # numpy's generators take none
        raise ConfigError(f"seed={cfg.seed}: must be 0 or more")
    if not 0 <= cfg.labeling.error_rate <= 1:
        raise ConfigError(
            f"labeling.error_rate={cfg.labeling.error_rate}: a share of answers, from 0 to 1 "
            "(0.05 for 5%)"
        )
    for setting in ("max_skips", "new_class_after"):
        if (value := getattr(cfg.labeling, setting)) < 0:
            raise ConfigError(f"labeling.{setting}={value}: must be 0 or more")
    if cfg.labeling.other_label.strip() != cfg.labeling.other_label:
        raise ConfigError(
            f"labeling.other_label={cfg.labeling.other_label!r}: without leading or trailing "
            "spaces, as Label Studio shows it"
        )
    if campaign.rounds < 0:
        raise ConfigError(f"campaign.rounds={campaign.rounds}: must be 0 (one round=N) or more")
    if campaign.stop_patience > 0 and not 0 < campaign.stop_agreement <= 1:
        raise ConfigError(
            f"campaign.stop_agreement={campaign.stop_agreement}: a share of the stop set, above "
            "0 and at most 1 (0.99 for 99%); a higher one never stops the campaign"
        )
    if campaign.stop_patience > 0 and campaign.stop_set < 1:
        raise ConfigError(
            f"campaign.stop_set={campaign.stop_set}: the stop rule compares models on at "
            "least 1 image; raise it, or turn the rule off with campaign.stop_patience=0"
        )
    title = cfg.labeling.project_title
    if cfg.labeling.kind == "labelstudio" and not 3 <= len(title) <= 50:  # Label Studio's rule
        raise ConfigError(
            f"labeling.project_title={title!r}: Label Studio takes 3 to 50 characters, "
            f"this has {len(title)}"
        )


def check_workspace(ws: Path) -> None:
    """The workspace must be a folder, or one that can be made where it is asked for."""
    if ws.exists() and not ws.is_dir():
        raise ConfigError(f"workspace={ws}: a file, not a folder; give a folder (made if missing)")
    parent = next(p for p in ws.absolute().parents if p.exists())
    if not ws.exists() and not parent.is_dir():
        raise ConfigError(f"workspace={ws}: {parent} is a file, not a folder; give another path")
    if not os.access(ws if ws.exists() else parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"workspace={ws}: cannot write in {ws if ws.exists() else parent}; give a folder of "
            "yours, or change its permissions"
        )


def check_keys(composed: DictConfig) -> None:
    """Refuse settings the schema does not have (`+model.dropuot=0.5`), which would
    otherwise run with no effect."""
    if unknown := unknown_keys(OmegaConf.to_container(composed, resolve=False)):
        raise ConfigError(
            f"{', '.join(unknown)}: no such setting; check the spelling "
            "(`python -m activelearn --cfg job` lists every setting)"
        )
