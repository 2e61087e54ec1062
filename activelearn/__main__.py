"""`python -m activelearn [overrides]`: the Hydra entry point; thin by design.

python -m activelearn                     retrain the workspace through dvc repro
python -m activelearn round=N             run (or finish) round N of the campaign
python -m activelearn campaign.rounds=R   rounds 0 to R-1 unattended, simulated annotator
python -m activelearn -m campaign.rounds=R strategy=entropy,random seed=0,1,2
                                          one independent campaign per job
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from activelearn.config import Config, register_configs
from activelearn.errors import ActivelearnError
from activelearn.rounds.checks import check_config, check_keys
from activelearn.rounds.sweep import job_config

if TYPE_CHECKING:
    from activelearn.rounds.state import RoundState

log = logging.getLogger("activelearn")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from omegaconf import OmegaConf

    from activelearn.workspace.repo import workspace_lock

    try:
        check_keys(cfg)
        config: Config = OmegaConf.to_object(cfg)
        if config.data.source:  # from where it was given: the rounds run in the workspace
            source = str(Path(config.data.source).expanduser().resolve())
            config = replace(config, data=replace(config.data, source=source))
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:  # each job its own campaign, apart from the rest
            config = job_config(config, hydra_cfg)
        check_config(config)
        with workspace_lock(Path(config.workspace).resolve()):
            print(run(config))
    except ActivelearnError as err:  # each says what is wrong and what to do: one line is enough
        log.error("%s", err)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: every finished phase is recorded, nothing half-written
        log.error("interrupted: run the same command again to go on from where it stopped")
        sys.exit(130)


def run(config: Config) -> str:
    """Run what the config asks for; a summary of it."""
    from activelearn.pipeline.run import run_pipeline
    from activelearn.rounds.campaign import run_campaign, run_round

    if config.campaign.rounds > 0:
        return campaign_summary(run_campaign(config))
    if config.round is not None:
        return round_summary(run_round(config))
    metrics = run_pipeline(config)
    return (
        f"{accuracy_text(metrics)}, macro F1 {metrics['macro_f1']:.4f}, "
        f"trained on {metrics['labeled_images']} labels"
    )


def accuracy_text(metrics: dict) -> str:
    """Test accuracy with its 95% interval: on a small test set the point alone misleads."""
    text = f"test accuracy {metrics['accuracy']:.4f}"
    if "accuracy_low" in metrics:  # a model evaluated before the interval was measured lacks it
        text += f" (95% interval {metrics['accuracy_low']:.3f}-{metrics['accuracy_high']:.3f})"
    return f"{text} on {metrics['test_images']} test images"


def round_summary(state: RoundState) -> str:
    train, select = state.train, state.select
    accuracy = f"{accuracy_text(train.metrics)}, " if train.metrics else "cold start, "
    queued = "stopped: " + select.reason if select.stop else f"{select.queued} queued"
    return f"round {state.round}: {accuracy}{train.labeled} labels, {queued}"


def campaign_summary(states: list[RoundState]) -> str:
    return "\n".join(round_summary(s) for s in states) or "campaign already finished"


if __name__ == "__main__":
    main()
    # Everything is on disk once main returns: skip the interpreter's teardown of
    # TensorFlow, MLflow and matplotlib, module by module, which takes seconds.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
