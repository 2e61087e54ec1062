"""Which measures and cold starts a strategy setting may name, and the check that a
strategy config can work before any round work.
"""

from __future__ import annotations

import logging

import numpy as np

from activelearn import strategies
from activelearn.config import StrategyConfig
from activelearn.errors import StrategyError

log = logging.getLogger(__name__)


DETERMINISTIC_MEASURES = ("least_confidence", "margin", "entropy")


MC_MEASURES = ("bald", "variation_ratio")


COLD_START = {"random": "random", "kcenter": "coldstart_kcenter", "typiclust": "typiclust"}


def check_strategy(cfg: StrategyConfig) -> None:
    """Fail at once, before any round work, on a strategy setting that cannot work."""
    if cfg.name not in strategies.STRATEGIES:
        raise StrategyError(
            f"strategy.name={cfg.name!r} is not a strategy; choose one of "
            f"{', '.join(strategies.STRATEGIES)}"
        )
    for setting, value, least in (
        ("batch_size", cfg.batch_size, 1),
        ("candidates", cfg.candidates, 0),
        ("mc_samples", cfg.mc_samples, 0),
    ):
        if value < least:
            raise StrategyError(f"strategy.{setting}={value}: must be at least {least}")
    if strategies.STRATEGIES[cfg.name].measure in MC_MEASURES and cfg.mc_samples < 2:
        raise StrategyError(
            f"strategy={cfg.name} needs Monte-Carlo samples: set strategy.mc_samples=20"
        )
    if unknown := strategies.unknown_params(cfg.name, cfg.params):
        raise StrategyError(
            f"strategy.params: {cfg.name} has no parameter {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(strategies.selector_params(cfg.name))) or 'none'}"
        )
    if cfg.params:
        try:  # the selector on a few planted samples: a bad value fails now, not after scoring
            _dry_run(cfg.name, dict(cfg.params))
        except (ValueError, TypeError) as err:
            raise StrategyError(f"strategy.params: {err}") from err


def _dry_run(name: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(8, 2)).transpose(0, 2, 1)  # [8, 3, 2 samples]
    if strategies.STRATEGIES[name].measure not in MC_MEASURES:
        probas = probas.mean(axis=-1)
    features = rng.normal(size=(10, 4))
    strategies.select_batch(
        name, probas, 2, rng, features=features[:8], labeled_features=features[8:], **params
    )
