"""The strategies by name: each a measure plus a selector (``STRATEGIES``), the adapters
that feed a selector what it needs of the pool, the hybrid, ``select_batch`` (the one
function the scorer calls), the selectors' parameters, and the check that a strategy
setting can work before any round work.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from activelearn.errors import StrategyError
from activelearn.strategies._inputs import (
    INVALID_SCORE,
    RngLike,
    _as_features,
    _check_k,
    _selectable,
)
from activelearn.strategies.clusters import cluster_then_top, typiclust
from activelearn.strategies.measures import MEASURES, mean_confidence, random
from activelearn.strategies.open_set import (
    known_class_probability,
    max_logit_known_probability,
)
from activelearn.strategies.selectors import kcenter_greedy, ranked_batch, top_k

if TYPE_CHECKING:
    from activelearn.config import StrategyConfig


DETERMINISTIC_MEASURES = ("least_confidence", "margin", "entropy")


MC_MEASURES = ("bald", "variation_ratio")


COLD_START = {"random": "random", "kcenter": "coldstart_kcenter", "typiclust": "typiclust"}


@dataclass(frozen=True)
class Strategy:
    """A measure (key of ``MEASURES``, or None for pure diversity) and a selector (key of
    ``SELECTORS``)."""

    measure: str | None
    selector: str


@dataclass(frozen=True)
class _Pool:
    """What select_batch knows about the pool besides the scores."""

    features: np.ndarray | None
    labeled_features: np.ndarray | None
    confidence: float | None  # the model's mean top-class probability; None: no model
    candidates: int | None
    classes: int | None = None  # how many classes the model tells apart; None: no model
    other_features: np.ndarray | None = None  # embeddings of the images answered "other"
    logits: np.ndarray | None = None  # the model's logits of the pool, when it has them


def _select_top_k(scores, k, rng, pool: _Pool):
    return top_k(scores, k, rng)


def _select_ranked_batch(scores, k, rng, pool: _Pool, alpha=None, metric="euclidean"):
    return ranked_batch(
        scores, pool.features, pool.labeled_features, k, rng, alpha=alpha, metric=metric
    )


def _select_kcenter(scores, k, rng, pool: _Pool, metric="euclidean"):
    return kcenter_greedy(pool.features, pool.labeled_features, k, rng, metric=metric)


def _select_cluster_margin(scores, k, rng, pool: _Pool):
    """The ``pool.candidates`` (default ``10 * k``) best scores, then the best of each of
    k clusters among them."""
    n_candidates = pool.candidates if pool.candidates is not None else 10 * k
    ranked = np.where(_selectable(scores, pool.features), scores, INVALID_SCORE)
    shortlist = top_k(ranked, max(n_candidates, k), rng)
    return shortlist[cluster_then_top(scores[shortlist], pool.features[shortlist], k, rng)]


def _select_typiclust(
    scores, k, rng, pool: _Pool, max_clusters=500, min_cluster_size=5, n_neighbors=20
):
    return typiclust(
        pool.features,
        pool.labeled_features,
        k,
        rng,
        max_clusters=max_clusters,
        min_cluster_size=min_cluster_size,
        n_neighbors=n_neighbors,
        selectable=_selectable(scores, None),  # hybrid: rows without a valid score go last
    )


def _select_hybrid(
    scores,
    k,
    rng,
    pool: _Pool,
    typical_per_class=3,
    max_clusters=500,
    min_cluster_size=5,
    n_neighbors=20,
    known_class_weighting=True,
    known_class_prior=None,
):
    """TypiClust picks the whole batch while fewer than ``typical_per_class`` labels per
    class are known on average (``typical_per_class * classes`` in all; the selector sees
    the labeled set's features, not its labels), or there is no model; after that, the
    share of the batch the model expects to get wrong (one minus its mean confidence on
    the pool). Cluster-margin picks the rest.

    A weak model's uncertainty is not worth following (sampling bias), so typical points
    cover the data first. Its confidence alone cannot say when it is weak: the digits CNN
    trained on 2 labels per class is right on 79% of the pool but 92% confident. Its
    uncertainty takes over as it becomes right.

    ``known_class_weighting``: once images were answered "other" (``pool.other_features``),
    each candidate's margin is weighed by its chance of being of a known class
    (``known_class_probability``), the "other" answers cover their clusters for TypiClust
    as labeled images do, and candidates more likely "other" than known are picked only
    when the others run out (cluster-margin would otherwise give a block of them a
    cluster, and take its best). Without "other" answers, or with False, the picks are the same
    as without it.

    ``known_class_prior="max_logit"``: weigh from round 0, before any "other" answer, by
    ``max_logit_known_probability`` (for a pool known to hold images of no class); the
    answers replace it once there are some.
    """
    labeled = 0 if pool.labeled_features is None else len(pool.labeled_features)
    if pool.confidence is None or labeled < typical_per_class * (pool.classes or 0):
        share = 1.0
    else:
        share = float(np.clip(1 - pool.confidence, 0, 1))
    typical_pool, typical_ok, margin_scores, likely_known = pool, None, scores, None
    others = pool.other_features
    answered = others is not None and len(others) and labeled
    known = None
    if known_class_weighting and answered:
        known = known_class_probability(pool.features, pool.labeled_features, others)
        covering = np.concatenate([pool.labeled_features, others])
        typical_pool = replace(pool, labeled_features=covering)
    elif known_class_weighting and known_class_prior is not None:
        known = _known_class_prior(known_class_prior, pool)
    if known is not None:
        typical_ok = likely_known = known >= 0.5
        margin_scores = np.where(scores == INVALID_SCORE, scores, scores * known)
    diverse = typiclust(
        pool.features,
        typical_pool.labeled_features,
        int(round(k * share)),
        rng,
        max_clusters=max_clusters,
        min_cluster_size=min_cluster_size,
        n_neighbors=n_neighbors,
        selectable=_selectable(scores, None) & (True if typical_ok is None else typical_ok),
    )
    rest = np.setdiff1d(np.arange(len(scores)), diverse)
    if likely_known is not None and likely_known[rest].sum() >= k - len(diverse):
        rest = rest[likely_known[rest]]  # cluster-margin's clusters: no block of "other"
    rest_pool = _Pool(pool.features[rest], None, pool.confidence, pool.candidates)
    uncertain = rest[_select_cluster_margin(margin_scores[rest], k - len(diverse), rng, rest_pool)]
    parts = [diverse, uncertain] if share >= 0.5 else [uncertain, diverse]
    return np.concatenate(parts).astype(np.intp)


KNOWN_CLASS_PRIORS = ("max_logit",)


def _known_class_prior(name: str, pool: _Pool) -> np.ndarray | None:
    """The hybrid's ``known_class_prior`` for each candidate; None without a model."""
    if name not in KNOWN_CLASS_PRIORS:
        raise ValueError(
            f"known_class_prior={name!r}; choose one of {', '.join(KNOWN_CLASS_PRIORS)} "
            "or null (weigh only once images were answered other)"
        )
    if pool.confidence is None:
        return None  # no model yet: typical images of the pixels, as without it
    if pool.logits is None:
        raise StrategyError(
            f"known_class_prior={name} needs the model's logits: its last layer must be "
            "a softmax Dense reading the features layer (model.features_layer); or set "
            "strategy.params.known_class_prior=null"
        )
    return max_logit_known_probability(pool.logits)


SELECTORS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "top_k": _select_top_k,
        "ranked_batch": _select_ranked_batch,
        "kcenter_greedy": _select_kcenter,
        "cluster_margin": _select_cluster_margin,
        "typiclust": _select_typiclust,
        "hybrid": _select_hybrid,
    }
)
_NEEDS_FEATURES = {"ranked_batch", "kcenter_greedy", "cluster_margin", "typiclust", "hybrid"}

STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        "least_confidence": Strategy("least_confidence", "top_k"),
        "margin": Strategy("margin", "top_k"),
        "entropy": Strategy("entropy", "top_k"),
        "random": Strategy("random", "top_k"),
        "bald": Strategy("bald", "top_k"),
        "variation_ratio": Strategy("variation_ratio", "top_k"),
        "ranked_batch": Strategy("least_confidence", "ranked_batch"),
        "cluster_margin": Strategy("margin", "cluster_margin"),
        "typiclust": Strategy(None, "typiclust"),
        "coldstart_kcenter": Strategy(None, "kcenter_greedy"),
        "hybrid": Strategy("margin", "hybrid"),
    }
)


def selector_params(strategy_name: str) -> dict[str, Any]:
    """The parameters ``select_batch`` accepts for a strategy, with their defaults."""
    strategy = STRATEGIES[strategy_name]
    signature = inspect.signature(SELECTORS[strategy.selector])
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def unknown_params(strategy_name: str, params: Mapping[str, Any]) -> list[str]:
    """The names in ``params`` that the strategy's selector does not take."""
    return sorted(set(params) - set(selector_params(strategy_name)))


def select_batch(
    strategy_name: str,
    probas: np.ndarray | None,
    k: int,
    rng: RngLike,
    *,
    features: np.ndarray | None = None,
    labeled_features: np.ndarray | None = None,
    pool_confidence: float | None = None,
    candidates: int | None = None,
    other_features: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    **params: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick the next batch of ``k`` pool samples with the named strategy.

    Args:
        strategy_name: a key of ``STRATEGIES``.
        probas: class probabilities of the pool, ``[n, classes]`` or ``[n, classes, T]``;
            None before there is a model (then only random, typiclust, coldstart_kcenter
            and hybrid work).
        k: batch size.
        rng: seeded generator (or seed): the only source of randomness and tie-breaks.
        features: pool embeddings ``[n, dim]``, needed by diversity-aware strategies.
        labeled_features: embeddings of the labeled set ``[m, dim]``.
        pool_confidence: the model's mean top-class probability over the whole pool, when
            ``probas`` holds only part of it (default: the mean over ``probas``).
        candidates: how many best-scored samples cluster-margin clusters (default 10 * k).
        other_features: embeddings of the images people answered "other" (of no class);
            the hybrid weighs candidates by their chance of being of a known class.
        logits: the model's logits of the pool ``[n, classes]`` (the softmax's input),
            for the hybrid's ``known_class_prior``.
        **params: override the strategy's selector parameters; see ``selector_params``.

    Returns:
        ``(indices, scores)``: indices into the pool, most informative first, length
        ``min(k, n)``, no duplicates; and the measure's score of every pool sample
        (higher = more informative, ``INVALID_SCORE`` for NaN/inf rows, 0.0 everywhere
        for strategies without a measure).
    """
    if strategy_name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {strategy_name!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    strategy = STRATEGIES[strategy_name]
    if unknown := unknown_params(strategy_name, params):
        raise ValueError(
            f"strategy {strategy_name!r} has no parameter(s) {unknown}; "
            f"it accepts: {sorted(selector_params(strategy_name)) or 'none'}"
        )
    rng = np.random.default_rng(rng)
    k = _check_k(k)
    if features is not None:
        features = _as_features(features, None)
    if probas is not None:
        probas = np.asarray(probas)
        n = len(probas)
    elif features is not None:
        n = len(features)
    else:
        raise ValueError(f"strategy {strategy_name!r} needs probas or features of the pool")
    if features is not None and len(features) != n:
        raise ValueError(
            f"features has {len(features)} rows but probas has {n}; pass one per pool sample"
        )
    if strategy.selector in _NEEDS_FEATURES and features is None:
        raise ValueError(
            f"strategy {strategy_name!r} needs features: the model's embeddings of the pool, "
            "shape [n, dim]"
        )

    if strategy.measure is None or (probas is None and strategy.selector == "hybrid"):
        scores = np.zeros(n)
    elif probas is not None:
        measure = MEASURES[strategy.measure]
        scores = measure(probas, rng) if measure is random else measure(probas)
    elif strategy.measure == "random":
        scores = rng.random(n)
    else:
        raise ValueError(
            f"strategy {strategy_name!r} needs class probabilities; before the first model "
            "use random, typiclust, coldstart_kcenter or hybrid"
        )
    if pool_confidence is None and probas is not None:
        pool_confidence = mean_confidence(probas)
    classes = probas.shape[1] if probas is not None else None
    pool = _Pool(
        features, labeled_features, pool_confidence, candidates, classes, other_features, logits
    )
    indices = SELECTORS[strategy.selector](scores, k, rng, pool, **params)
    return np.asarray(indices, dtype=np.intp), scores


def check_strategy(cfg: StrategyConfig) -> None:
    """Fail at once, before any round work, on a strategy setting that cannot work."""
    if cfg.name not in STRATEGIES:
        raise StrategyError(
            f"strategy.name={cfg.name!r} is not a strategy; choose one of {', '.join(STRATEGIES)}"
        )
    for setting, value, least in (
        ("batch_size", cfg.batch_size, 1),
        ("candidates", cfg.candidates, 0),
        ("mc_samples", cfg.mc_samples, 0),
    ):
        if value < least:
            raise StrategyError(f"strategy.{setting}={value}: must be at least {least}")
    if STRATEGIES[cfg.name].measure in MC_MEASURES and cfg.mc_samples < 2:
        raise StrategyError(
            f"strategy={cfg.name} needs Monte-Carlo samples: set strategy.mc_samples=20"
        )
    if unknown := unknown_params(cfg.name, cfg.params):
        raise StrategyError(
            f"strategy.params: {cfg.name} has no parameter {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(selector_params(cfg.name))) or 'none'}"
        )
    if cfg.params:
        try:  # the selector on a few planted samples: a bad value fails now, not after scoring
            _dry_run(cfg.name, dict(cfg.params))
        except (ValueError, TypeError) as err:
            raise StrategyError(f"strategy.params: {err}") from err


def _dry_run(name: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(8, 2)).transpose(0, 2, 1)  # [8, 3, 2 samples]
    if STRATEGIES[name].measure not in MC_MEASURES:
        probas = probas.mean(axis=-1)
    features = rng.normal(size=(10, 4))
    select_batch(
        name,
        probas,
        2,
        rng,
        features=features[:8],
        labeled_features=features[8:],
        logits=rng.normal(size=(8, 3)),
        **params,
    )
