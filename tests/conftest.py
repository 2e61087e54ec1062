"""Fixtures for both tiers: the BentoML store out of the checkout, a tiny model config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep TF's chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
