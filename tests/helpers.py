"""What several test modules use: generated images, configs and workspaces, the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from activelearn.config import (
    CampaignConfig,
    Config,
    DataConfig,
    StrategyConfig,
    TrackingConfig,
    register_configs,
)
from activelearn.core.faults import VARIABLE
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem, write_queue

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def pattern_image(label: int, rng: np.random.Generator, size: int = 12) -> Image.Image:
    """Class 0: horizontal stripes, class 1: vertical stripes, class 2: a filled square."""
    img = rng.integers(0, 40, (size, size)).astype(np.uint8)
    if label == 0:
        img[::3, :] = 255
    elif label == 1:
        img[:, ::3] = 255
    else:
        img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return Image.fromarray(img)


def write_class_folders(root: Path, per_class: int, seed: int = 0, n_classes: int = 3) -> None:
    """`root/<class>/<file>.png` with recognisable patterns per class."""
    rng = np.random.default_rng(seed)
    for label in range(n_classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pattern_image(label, rng).save(folder / f"s{seed}-{i:03d}.png")


GROUPS = ["data", "model", "strategy", "labeling", "tracking", "scoring", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def compose_config(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


CLASSES = ["class0", "class1", "class2"]


def choice(label: str) -> list[dict]:
    return [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    ]


FAST = [(20, 0.80), (30, 0.91), (40, 0.96)]


SLOW = [(20, 0.80), (30, 0.85), (40, 0.89)]


def write_job(sweep, job, strategy, curve, overrides=None):
    """A finished job of a Hydra sweep: its config, its overrides and its rounds."""
    (sweep / job / ".hydra").mkdir(parents=True)
    OmegaConf.save({"strategy": {"name": strategy}}, sweep / job / ".hydra" / "config.yaml")
    overrides = [f"strategy={strategy}", "seed=0"] if overrides is None else overrides
    OmegaConf.save(overrides, sweep / job / ".hydra" / "overrides.yaml")
    for n, (labels, accuracy) in enumerate(curve):
        state = {
            "round": n,
            "phases": {"train": {"metrics": {"labeled_images": labels, "accuracy": accuracy}}},
        }
        folder = sweep / job / "campaign" / "rounds" / str(n)
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps(state))


N_CLASSES = 3


def make_workspace(ws: Path, seed: int = 0) -> None:
    """2 labeled per class, 6 test per class, 30 pool images per class with answers."""
    rng = np.random.default_rng(seed)
    answers = []
    for label in range(N_CLASSES):
        for part, count in (("raw", 2), ("test", 6), ("pool", 30)):
            for i in range(count):
                folder = ws / "data" / part / (f"c{label}" if part != "pool" else f"batch{i % 3}")
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{part}-{label}-{i:02d}.png"
                pattern_image(label, rng).save(folder / name)
                if part == "pool":
                    answers.append((f"batch{i % 3}/{name}", f"c{label}"))
    with (ws / "data" / "pool_labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *answers])


def make_config(ws: Path, tiny_model_cfg, **campaign) -> Config:
    return Config(
        data=DataConfig(image_size=[12, 12], channels=1, demo=None),
        model=tiny_model_cfg,
        strategy=StrategyConfig(name="margin", batch_size=6, candidates=30),
        tracking=TrackingConfig(uri="sqlite:///mlruns.db"),  # the campaign's own experiment
        campaign=CampaignConfig(**({"stop_patience": 0} | campaign)),
        workspace=str(ws),
    )


# conf/model/cnn.yaml's recipe options off, as the schema's defaults (tiny_model_cfg) have
# them: a command-line round then trains what a `make_config` round trains.
PREVIOUS_RECIPE = [
    "model.augment.enabled=false",
    "model.ema=0",
    "model.class_balanced=false",
    "model.warm_start=false",
]


def run_cli_round(ws: Path, n: int, kill_at: str | None = None, *extra: str) -> int:
    """`python -m activelearn round=N` on the test workspace, optionally killed at a point."""
    env = os.environ | {VARIABLE: kill_at or ""}
    args = [
        sys.executable,
        "-m",
        "activelearn",
        f"round={n}",
        f"workspace={ws}",
        "data.image_size=[12,12]",
        "data.channels=1",
        "data.demo=null",
        "model.filters=[8]",
        "model.dense_units=16",
        "model.dropout=0.1",
        "model.min_steps=40",
        "model.min_epochs=2",
        *PREVIOUS_RECIPE,  # as make_config's ModelConfig: the runs are compared with it
        "strategy.name=margin",
        "strategy.batch_size=6",
        "strategy.candidates=30",
        "campaign.stop_patience=0",
        "hydra.run.dir=" + str(ws.parent / "hydra"),
        *extra,
    ]
    return subprocess.run(args, env=env, capture_output=True, text=True).returncode


STAGE = f"{sys.executable} -m activelearn.pipeline.stages"


ENV = dict(os.environ)


class CommandFailed(Exception):
    pass


def dvc_running(script: str, cwd):
    """A stand-in for DVC's repro: runs `script` with the stage environment, and fails
    when it exits non-zero, as DVC does when a stage command fails."""

    def reproduce(stage_env: dict) -> None:
        done = subprocess.run(["sh", "-c", script], cwd=cwd, env=ENV | stage_env)
        if done.returncode:
            raise CommandFailed(done.returncode)

    return reproduce


def no_dvc_thread_left() -> bool:
    return not any(t.name == "dvc-repro" for t in threading.enumerate())


def queued_workspace(tmp_path: Path, monkeypatch, pool: Path, samples: list[str]) -> Config:
    """A workspace (the current folder) whose round 0 queued `samples` of `pool`."""
    monkeypatch.chdir(tmp_path)
    for sid in samples:
        Image.new("L", (8, 8)).save(pool / sid)
    cfg = Config(data=DataConfig(pool_dir=str(pool)), campaign=CampaignConfig(min_answered=0))
    manifest = Manifest(cfg.data.manifest)
    for sid in samples:
        manifest.set_state(sid, "queued", round=0)
    manifest.save()
    queue = [QueueItem(sid, rank, "cat", 0.5, 0.5) for rank, sid in enumerate(samples, 1)]
    write_queue("rounds/0/queue.jsonl", queue)
    return cfg


INGEST_SUMMARY = (  # the ingest phase's log line, as tests/*/test_ingest_outcomes.py expect it
    "round 1 ingested the answers to the queue of round 0: "
    "labeled 1, other {other}, rejected {rejected}, back to pool 1, queued again {requeued}, "
    "still open {open}"
)


def calibrated_weights(folder: Path, x: np.ndarray, cfg) -> str:
    """A backbone weights file saved here first (no download): random weights with the
    batch-norm statistics of the images `x` (momentum 0). A randomly initialised
    keras.applications network gives features of about 1e-10, so every prediction would
    be uniform and every comparison between two paths trivially equal."""
    from dataclasses import replace

    import keras

    from activelearn.data.images import Preprocessing
    from activelearn.learner.networks import backbone

    prep = Preprocessing(x.shape[1:3], 3, "raw")
    network = backbone(prep, replace(cfg, weights=None))
    network.trainable = True  # a frozen batch norm would not update its statistics
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    network(x, training=True)
    path = Path(folder) / "calibrated.weights.h5"
    network.save_weights(path)
    return str(path)


def checksums(root: Path) -> dict[str, str]:
    """Content and permissions of every file under `root`: what "unchanged" means."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        + oct(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


LABEL_CONFIG = """
<View>
  <Image name="img" value="$picture"/>
  <Choices name="cls" toName="img" choice="single">
    <Choice value="class0"/><Choice value="class1"/><Choice value="class2"/>
  </Choices>
</View>
"""  # a labeling config of the three CLASSES, for the ML backend's /setup and /predict


def wait_for_model(client, timeout: float = 30.0) -> dict:
    """/health once the model file has been loaded or refused (it loads in the background)."""
    deadline = time.monotonic() + timeout
    while (health := client.get("/health").json())["model_state"] == "loading":
        assert time.monotonic() < deadline, f"model still loading after {timeout} s"
        time.sleep(0.05)
    return health


@contextmanager
def serving_client(model_path: Path, root: Path, scratch: Path, timeout: float = 60.0):
    """A test client of the ML backend serving `model_path` for the images under `root`
    (pool in `root/pool`), its model loaded; its own files in `scratch`."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServingSettings

    settings = ServingSettings(
        model_path=model_path,
        document_root=root,
        pool_dir=root / "pool",
        batch_size=4,
        retrain_log=scratch / "retrain.log",
        retrain_cwd=scratch,
        annotation_counts=scratch / "annotations.json",
    )
    with TestClient(create_app(settings)) as client:
        wait_for_model(client, timeout)
        yield client
