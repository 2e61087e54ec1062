"""What every family of strategies shares: the score of a row that cannot be scored, the
seeded-generator type, and the checks of a selector's inputs (batch size, scores, feature
vectors, which rows may be ranked, seeded tie-breaks).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__package__)  # a private module's name is no use in a log line

INVALID_SCORE = -1.0
"""Score of a row that cannot be scored (NaN/inf input). Every measure's real scores are
>= 0, so this ranks last, and it stays a finite number that JSON and MLflow accept."""

RngLike = np.random.Generator | int | None


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"batch size k must be a non-negative integer; got {k!r}")
    return int(k)


def _as_scores(scores: np.ndarray) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one float per sample, shape [n]; got shape {arr.shape}")
    return arr


def _as_features(features: np.ndarray, n: int | None, name: str = "features") -> np.ndarray:
    arr = np.asarray(features)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [n, dim]; got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(
            f"{name} has {len(arr)} rows but there are {n} scores; pass one per sample"
        )
    return arr


def _as_labeled(labeled_features: np.ndarray | None, dim: int) -> np.ndarray:
    """Labeled feature rows as [m, dim]; None means none. Rows with NaN/inf are dropped."""
    if labeled_features is None:
        return np.empty((0, dim))
    arr = _as_features(labeled_features, None, "labeled_features")
    if len(arr) and arr.shape[1] != dim:
        raise ValueError(
            f"labeled_features has dim {arr.shape[1]} but features has dim {dim}; "
            "embed both with the same model"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        logger.warning("dropping %d labeled feature rows with NaN/inf", int((~finite).sum()))
        arr = arr[finite]
    return arr.reshape(-1, dim)


def _selectable(scores: np.ndarray | None, features: np.ndarray | None) -> np.ndarray:
    """Rows a selector may rank: finite, non-sentinel score and finite feature vector."""
    n = len(scores) if scores is not None else len(features)
    ok = np.ones(n, dtype=bool)
    if scores is not None:
        ok &= np.isfinite(scores) & (scores != INVALID_SCORE)
    if features is not None:
        bad_features = ~np.isfinite(features).all(axis=1)
        if bad_features.any():
            logger.warning(
                "%d of %d feature rows contain NaN/inf; they are selected last",
                int(bad_features.sum()),
                n,
            )
        ok &= ~bad_features
    return ok


def _complete(picks: np.ndarray, selectable: np.ndarray, k: int, rng: np.random.Generator):
    """Append unselectable rows, in seeded random order, when k exceeds the selectable ones."""
    need = min(k, len(selectable)) - len(picks)
    if need > 0:
        rest = rng.permutation(np.flatnonzero(~selectable))[:need]
        picks = np.concatenate([picks, rest])
    return np.asarray(picks, dtype=np.intp)


def _argmax_tie_random(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the maximum; among exact ties, a seeded random one (not the first)."""
    best = values.max()
    ties = np.flatnonzero(values == best)
    return int(ties[0] if len(ties) == 1 else rng.choice(ties))
