"""Every path and name of a campaign workspace's layout, in one place.

Paths are relative to the workspace folder, except the project's own (`PROJECT_ROOT`).
"""

from __future__ import annotations

import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: conf/, dvc.yaml
PIPELINE = PROJECT_ROOT / "dvc.yaml"  # copied into new workspaces

CAMPAIGN_ID = "campaign.id"  # the workspace's campaign id (committed with every round)
SOURCE_RECORD = Path("data/source.json")  # the dataset source taken, and its fixed checksums
LOCK = ".activelearn.lock"  # held by the run working in the workspace

PARAMS = Path("params.yaml")  # the DVC params: the config's parts the stages read
PREPARED = Path("prepared")  # the prepare stage's arrays
MODEL_FILE = Path("model/classifier.bentomodel")
EVALUATION = Path("evaluation")
METRICS = EVALUATION / "metrics.json"
HISTORY = EVALUATION / "history.csv"
# Frozen-backbone features per image, by backbone and file content: run state, never
# versioned (rebuilt when removed).
FEATURE_CACHE = Path(".cache/features")
# Each round's trained weights (`round-N.npz`), where `model.warm_start` starts the next
# round (a rerun of round N still starts from round N-1's): run state like the feature
# cache, never versioned.
WARM_START = Path(".cache/warm_start")

ROUNDS = Path("rounds")
STOP_SET = ROUNDS / "stop_set.json"  # drawn from the pool once, for the stop rule
SERVING_RETRAIN_LOG = ROUNDS / "serving-retrain.log"  # the ML backend's retrain runs
SERVING_ANNOTATIONS = ROUNDS / "serving-annotations.json"  # the ML backend's counts


def round_tag(round: int) -> str:
    """`round-N`: the round's git tag and MLflow run, and its model's version in BentoML,
    MLflow and Label Studio."""
    return f"round-{round}"


def round_of_tag(tag: str | None) -> int | None:
    """The inverse of `round_tag`: `round-3` -> 3; None for anything else."""
    match = re.fullmatch(r"round-(\d+)", tag or "")
    return int(match.group(1)) if match else None


def round_dir(n: int) -> Path:
    return ROUNDS / str(n)
