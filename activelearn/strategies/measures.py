"""Uncertainty measures: class probabilities in, one score per sample out.

Each takes ``probas``, the model's class probabilities, shaped ``[n, classes]`` (one
deterministic pass) or ``[n, classes, T]`` (T Monte-Carlo dropout passes), and returns one
float per sample. Higher = more informative. Measures that are not about MC disagreement
average ``[n, classes, T]`` over T first. Rows containing NaN/inf cannot be scored: they
get ``INVALID_SCORE`` (below every real score) and are counted in a log warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
from scipy.special import entr

from activelearn.strategies._inputs import INVALID_SCORE, RngLike

logger = logging.getLogger(__name__)


def _checked_probas(probas: np.ndarray, measure: str, *, mc: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``probas``; return (float64 copy with bad rows made uniform, bad-row mask).

    With ``mc=False`` a ``[n, classes, T]`` array is averaged over T; with ``mc=True`` it
    must be ``[n, classes, T]``.
    """
    arr = np.asarray(probas, dtype=np.float64)
    if arr.ndim not in (2, 3) or arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ValueError(
            f"{measure}: probas must have shape [n, classes] or [n, classes, T] with "
            f"classes >= 1 and T >= 1; got shape {arr.shape}"
        )
    if mc and arr.ndim != 3:
        raise ValueError(
            f"{measure}: needs Monte-Carlo dropout samples, probas of shape [n, classes, T]; "
            f"got shape {arr.shape}. Score the pool with MC dropout (mc_samples >= 2)."
        )
    bad = ~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
    if bad.any():
        logger.warning(
            "%s: %d of %d rows of probas contain NaN/inf; they score %s and are selected last",
            measure,
            int(bad.sum()),
            len(arr),
            INVALID_SCORE,
        )
        arr = arr.copy()
        arr[bad] = 1.0 / arr.shape[1]
    if (arr < 0).any():
        row = int(np.flatnonzero((arr < 0).reshape(len(arr), -1).any(axis=1))[0])
        raise ValueError(
            f"{measure}: probas has negative values (first in row {row}); "
            "pass softmax probabilities, not logits"
        )
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > 1e-2
    if off.any():
        row = int(np.flatnonzero(off.reshape(len(arr), -1).any(axis=1))[0])
        raise ValueError(
            f"{measure}: probas rows must sum to 1 over the classes axis (axis 1); row {row} "
            f"sums to {sums.reshape(len(arr), -1)[row].tolist()}. Apply softmax first."
        )
    if arr.ndim == 3 and not mc:
        arr = arr.mean(axis=2)
    return arr, bad


class MeanConfidence:
    """The model's mean top-class probability, summed block by block in integer fixed
    point: the same to the last bit however the pool is cut into blocks (a float sum is
    not), so every scoring engine reports the same figure. NaN/inf rows do not count."""

    SCALE = 2**24  # float32's resolution near 1

    def __init__(self) -> None:
        self.total, self.count = 0, 0

    def add(self, confidence: np.ndarray) -> None:
        finite = confidence[np.isfinite(confidence)]  # a NaN row must not poison the sum
        self.total += int(np.rint(finite.astype(np.float64) * self.SCALE).astype(np.int64).sum())
        self.count += len(finite)

    @property
    def value(self) -> float | None:
        return self.total / self.SCALE / self.count if self.count else None


def mean_confidence(probas: np.ndarray) -> float | None:
    """The mean top-class probability of ``probas`` ([n, classes] or [n, classes, T]),
    over the rows without NaN/inf (None if none)."""
    p = np.asarray(probas, dtype=np.float64)
    mean = MeanConfidence()
    mean.add((p.mean(axis=2) if p.ndim == 3 else p).max(axis=1))
    return mean.value


def _with_sentinel(scores: np.ndarray, bad: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    scores[bad] = INVALID_SCORE
    return scores


def least_confidence(probas: np.ndarray) -> np.ndarray:
    """``1 - max_c p``: in [0, 1 - 1/classes]; high when even the top class is unlikely."""
    p, bad = _checked_probas(probas, "least_confidence", mc=False)
    return _with_sentinel(1.0 - p.max(axis=1), bad)


def margin(probas: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)``: in [0, 1]; high when the two likeliest classes are close.

    Ranks rows exactly as modAL's ``margin_sampling`` (smallest margin first). With a
    single class there is no runner-up and every row scores 0.
    """
    p, bad = _checked_probas(probas, "margin", mc=False)
    if p.shape[1] == 1:
        return _with_sentinel(np.zeros(len(p)), bad)
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return _with_sentinel(1.0 - (top2[:, 0] - top2[:, 1]), bad)


def entropy(probas: np.ndarray) -> np.ndarray:
    """Shannon entropy of the class distribution, in nats: in [0, log(classes)]."""
    p, bad = _checked_probas(probas, "entropy", mc=False)
    p = p / p.sum(axis=1, keepdims=True)
    return _with_sentinel(entr(p).sum(axis=1), bad)


def random(probas: np.ndarray, rng: RngLike) -> np.ndarray:
    """Uniform random scores in [0, 1) from the seeded generator: passive sampling."""
    p, bad = _checked_probas(probas, "random", mc=False)
    return _with_sentinel(np.random.default_rng(rng).random(len(p)), bad)


def bald(probas: np.ndarray) -> np.ndarray:
    """BALD mutual information between label and weights, in nats: in [0, log(classes)].

    ``H(mean_t p_t) - mean_t H(p_t)`` over the T MC-dropout samples of ``[n, classes, T]``:
    high when the samples are each confident but disagree with one another.
    """
    p, bad = _checked_probas(probas, "bald", mc=True)
    p = p / p.sum(axis=1, keepdims=True)
    total = entr(p.mean(axis=2)).sum(axis=1)
    expected = entr(p).sum(axis=1).mean(axis=1)
    return _with_sentinel(np.maximum(total - expected, 0.0), bad)


def variation_ratio(probas: np.ndarray) -> np.ndarray:
    """``1 - (votes for the modal class) / T`` over the argmax of each of the T MC samples.

    In [0, 1 - 1/min(T, classes)]; 0 when all samples agree. Needs ``[n, classes, T]``.
    """
    p, bad = _checked_probas(probas, "variation_ratio", mc=True)
    n, n_classes, n_samples = p.shape
    votes = p.argmax(axis=1)  # [n, T]
    flat = (np.arange(n)[:, None] * n_classes + votes).ravel()
    counts = np.bincount(flat, minlength=n * n_classes).reshape(n, n_classes)
    return _with_sentinel(1.0 - counts.max(axis=1) / n_samples, bad)


MEASURES: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "least_confidence": least_confidence,
        "margin": margin,
        "entropy": entropy,
        "random": random,
        "bald": bald,
        "variation_ratio": variation_ratio,
    }
)
