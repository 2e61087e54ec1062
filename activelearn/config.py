"""Typed schema of the Hydra configuration.

Every scalar setting lives in one of these dataclasses, registered in Hydra's
ConfigStore as the base of `conf/config.yaml`, so a misspelled override or a value
of the wrong type fails when the config is composed, not rounds later.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, Optional, get_type_hints

from hydra.core.config_store import ConfigStore


# Choices: OmegaConf refuses any other value when the config is composed, naming the
# allowed ones; each member compares equal to its string.
class ColdStart(StrEnum):
    """Round 0 without a model: random picks, k-center greedy or typical images on pixels."""

    random = "random"
    kcenter = "kcenter"
    typiclust = "typiclust"


class LabelingKind(StrEnum):
    simulated = "simulated"  # an oracle answering from the labels file
    labelstudio = "labelstudio"  # people, in Label Studio


class Vote(StrEnum):
    """How several annotations of one task decide its label."""

    majority = "majority"  # more than half agree
    unanimous = "unanimous"  # all agree


class Skipped(StrEnum):
    """What becomes of a cancelled or skipped task's image."""

    pool = "pool"  # back to the pool
    exclude = "exclude"  # out of the campaign, rejected


class OnDisagreement(StrEnum):
    """What becomes of a task whose answers disagree (or tie) under `vote`."""

    requeue = "requeue"  # one more answer asked (the task's overlap raised): stays queued
    reject = "reject"  # out of the campaign, rejected


class ModelKind(StrEnum):
    """What network a round trains."""

    cnn = "cnn"  # the project's small CNN, from scratch
    backbone = "backbone"  # a keras.applications network, frozen, with a trained head
    custom = "custom"  # your own: `model._target_` builds it, the project trains it


class Interpolation(StrEnum):
    """How augmentation resamples shifted, zoomed and rotated pixels."""

    bilinear = "bilinear"  # smooth, and blurs fine detail (textures, thin strokes)
    nearest = "nearest"  # moves pixels and keeps their values


class Engine(StrEnum):
    """Where the pool is scored."""

    local = "local"  # this machine
    ray = "ray"  # a Ray cluster (pip install '.[ray]')


@dataclass
class DataConfig:
    raw_dir: str = "data/raw"  # labeled images: <raw_dir>/<class>/<file>
    pool_dir: str = "data/pool"  # unlabeled images, nested folders allowed
    test_dir: str = "data/test"  # fixed held-out set: <test_dir>/<class>/<file>
    manifest: str = "data/manifest.csv"  # state of every pool sample
    other_dir: str = "data/other"  # pool images answered "other" (no class): known negatives
    image_size: list[int] = field(default_factory=lambda: [32, 32])  # height, width
    channels: int = 3  # 1 = grayscale, 3 = RGB
    test_fraction: float = 0.2  # of the labeled set at set-up, when test_dir is empty
    demo: Optional[str] = None  # bundled dataset written into the layout when raw_dir is empty
    seed_per_class: int = 2  # demo only: labeled images per class to start with
    pool_labels: str = "data/pool_labels.csv"  # simulated annotator's answers (demo writes it)
    # A dataset folder (raw/, pool/, optional test/ and pool_labels.csv) a new workspace
    # takes its data from by hard link; relative to where you run. None = the workspace's own.
    source: Optional[str] = None


@dataclass
class AugmentConfig:
    """Random changes to the training images only; scoring, evaluation and serving see
    the image as it is. Each part is off at 0 / false."""

    enabled: bool = False  # the switch for all of the below
    translate: float = 0.1  # random shift, a fraction of height and width
    zoom: float = 0.0  # random zoom in or out (a crop, or a margin), a fraction of the size
    rotation: float = 0.0  # random rotation, a fraction of a full turn (0.03 = 11 degrees)
    flip: bool = False  # random left-right flips (off for digits and text)
    contrast: float = 0.0  # random contrast change, a fraction
    brightness: float = 0.0  # random brightness change, a fraction of the value range
    interpolation: Interpolation = Interpolation.nearest  # how moved pixels are resampled


@dataclass
class ModelConfig:
    kind: ModelKind = ModelKind.cnn
    name: str = "cnn"  # the Keras model's name
    filters: list[int] = field(default_factory=lambda: [32, 64])  # one conv block each
    dense_units: int = 128
    dropout: float = 0.3
    batch_size: int = 32
    learning_rate: float = 1e-3
    # Train for at least this many optimizer steps (and epochs), so a tiny labeled set
    # still gets a model worth scoring with: 20 images are one step per epoch.
    min_steps: int = 300
    min_epochs: int = 10
    image_size: Optional[list[int]] = None  # the model's input [h, w]; None = data.image_size
    # Pixel values as the network expects them: unit [0,1], raw [0,255], symmetric [-1,1],
    # caffe (BGR minus the ImageNet mean); None = unit, or the backbone's own convention.
    scaling: Optional[str] = None
    backbone: str = "MobileNetV3Small"  # backbone: a keras.applications network by name
    # backbone: "imagenet" (downloaded once by Keras into ~/.keras/models), a local weights
    # file (.h5 / .weights.h5, made on a machine online), or None for random weights
    weights: Optional[str] = "imagenet"
    finetune_layers: int = 0  # backbone: top layers trained after the head (0 = frozen)
    feature_cache: bool = True  # backbone: compute each image's features once per campaign
    # custom: a function (input_shape, n_classes, **params) -> uncompiled Keras model
    _target_: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)  # custom: the function's arguments
    features_layer: Optional[str] = None  # custom: layer fed to diversity; None = penultimate
    # The training recipe's options (docs/models.md#the-training-recipe):
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # the training stream only
    ema: float = 0.0  # > 0: keep the exponential moving average of the weights (momentum)
    class_balanced: bool = False  # draw each training batch's images class by class evenly
    warm_start: bool = False  # start from the last round's weights, not from scratch
    # > 1: fit the softmax temperature on out-of-fold predictions of the labeled set (this
    # many extra fits a round); 0 = no temperature scaling
    calibration_folds: int = 0


@dataclass
class StrategyConfig:
    name: str = "hybrid"
    batch_size: int = 10  # images queued per round
    candidates: int = 1000  # the best-scored samples, plus as many at random, selectors see
    mc_samples: int = 0  # Monte-Carlo dropout passes; 0 = one deterministic pass
    cold_start: ColdStart = ColdStart.random  # round 0, without a model
    # The selector's own parameters, e.g. {typical_per_class: 5} for hybrid or {alpha: 0.5}
    # for ranked_batch (activelearn.strategies.selector_params lists each one's defaults).
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelingConfig:
    kind: LabelingKind = LabelingKind.simulated
    error_rate: float = 0.0  # simulated: share of answers flipped to a wrong class
    url: str = "http://127.0.0.1:8080"  # labelstudio: server URL; token from LABEL_STUDIO_API_KEY
    project_title: str = "activelearn"
    # labelstudio: project id, pool storage, views and task ids per round (no secrets)
    state_file: str = "rounds/labelstudio.json"
    document_root: Optional[str] = None  # the server's local-files root; None = the pool's parent
    vote: Vote = Vote.majority  # several annotations per task
    skipped: Skipped = Skipped.pool  # cancelled/skipped tasks
    on_disagreement: OnDisagreement = OnDisagreement.requeue  # answers that decide nothing
    annotations_per_task: int = 1  # Label Studio's overlap: answers wanted per task
    timeout: float = 60.0  # seconds per request
    retries: int = 4  # transient failures (5xx, 429, timeouts) retried this often
    backoff: float = 1.0  # seconds before the first retry, doubled each time
    # The answer for an image of none of the classes: out of the pool for good, into
    # data.other_dir; "" = no such choice in Label Studio
    other_label: str = "Other (none of these)"
    max_skips: int = 1  # skipped.pool: a skipped image comes back this often, then excluded
    # "Other" answers alike (one cluster of them) that the round report lists as a
    # candidate new class, with a grid of examples; 0 = never
    new_class_after: int = 10


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns.db"  # MLflow tracking URI; relative paths are in the workspace
    # None: the store's own experiment, named after the workspace folder (a sweep's: after
    # the sweep folder); a name puts every campaign that gives it into one experiment.
    experiment: str | None = None
    # The campaign run's name; None = the campaign id (a sweep's job: the settings it sweeps).
    run_name: str | None = None


@dataclass
class CampaignConfig:
    rounds: int = 0  # > 0: run rounds unattended until round `rounds - 1` has finished
    budget: int = 400  # stop once this many answers (labels, "other", skips, rejections) are spent
    min_answered: float = 1.0  # share of the open queue answered before a round goes on
    stop_set: int = 200  # unlabeled pool samples on which consecutive models are compared
    stop_agreement: float = 0.99  # stop when consecutive models agree this much ...
    stop_patience: int = 2  # ... this many rounds in a row (0 = never stop early)
    git_commit: bool = True  # commit and tag `round-N` in the workspace's git history


@dataclass
class RayScoringConfig:
    # A running cluster (`host:6379`, `ray://host:10001`, or `auto` for the one `ray start`
    # made on this node): joined as it is, no resources of our own. None = start a local
    # Ray sized to this machine.
    address: Optional[str] = None
    actors: int = 0  # scoring actors, one model each; 0 = as many as the cluster's CPUs allow
    cpus_per_actor: float = 1.0  # CPUs each actor reserves (and its decoding threads)
    # TensorFlow threads per actor; 0 = TensorFlow's default, as the local scorer: the same
    # scores to the bit on the same kind of machine. Other counts move scores by ~1e-7.
    tf_threads: int = 0
    block_size: int = 4096  # pool samples per actor call; each returns only its top candidates
    start_timeout: float = 300.0  # seconds to wait for every actor to load the model


@dataclass
class ScoringConfig:
    engine: Engine = Engine.local
    batch_size: int = 256  # images per forward pass, both engines
    ray: RayScoringConfig = field(default_factory=RayScoringConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    workspace: str = "campaign"  # the campaign's own git + DVC repo: data/, model/, rounds/
    seed: int = 0
    round: Optional[int] = None


def unknown_keys(settings: dict, schema: type = Config, prefix: str = "") -> list[str]:
    """Dotted names of the settings the schema does not have: Hydra lets `+key=value`
    add them, past the typed check, and they would ride along with no effect. A free
    dict (`strategy.params`) may hold any key."""
    hints = get_type_hints(schema)
    known = {f.name for f in fields(schema)}
    found = []
    for key, value in settings.items():
        if key not in known:
            found.append(f"{prefix}{key}")
        elif is_dataclass(hints[key]) and isinstance(value, dict):
            found += unknown_keys(value, hints[key], f"{prefix}{key}.")
    return found


def register_configs() -> None:
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="schema", node=Config)
    OmegaConf.register_new_resolver("job_folder", job_folder, replace=True)


def job_folder(overrides: str) -> str:
    """A job's folder name from its overrides: a `/` in a value made `_`, so each job is
    one folder of the sweep; `defaults` for a job without any."""
    return overrides.replace("/", "_") or "defaults"
