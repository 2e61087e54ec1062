"""Shared fixtures: small generated images and a tiny model config."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Keep TF's chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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


@pytest.fixture(autouse=True, scope="session")
def bentoml_store_outside_the_checkout(tmp_path_factory) -> None:
    """A test that saves a model without `bentoml_home` (or a command it starts) would
    otherwise make the store in the working directory: the checkout."""
    os.environ.setdefault("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml-store")))


@pytest.fixture
def bentoml_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return home


@pytest.fixture
def tiny_model_cfg():
    from activelearn.config import ModelConfig

    return ModelConfig(filters=[8], dense_units=16, dropout=0.1, min_steps=40, min_epochs=2)
