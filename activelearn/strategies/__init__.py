"""Query strategies: class probabilities in, scores out; then a selector picks the batch.

Two layers of pure functions, with no model framework in sight:

* A **measure** takes ``probas``, the model's class probabilities, shaped
  ``[n, classes]`` (one deterministic pass) or ``[n, classes, T]`` (T Monte-Carlo
  dropout passes), and returns one float per sample. Higher = more informative.
  Measures that are not about MC disagreement average ``[n, classes, T]`` over T first.
  Rows containing NaN/inf cannot be scored: they get ``INVALID_SCORE`` (below every real
  score), are counted in a log warning, and every selector takes them only after all
  valid rows.
* A **selector** takes scores and/or feature vectors (the model's embeddings) and
  returns indices into the given arrays, most important first, ``min(k, n)`` of them,
  never a duplicate. Ties are broken by the caller's seeded ``numpy.random.Generator``,
  never by array order.

A strategy is a measure plus a selector: one entry in ``STRATEGIES``; the selector's
parameters come from the caller (``strategy.params`` in the config).
``select_batch`` is the one function the scorer calls.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.special import entr
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min
from sklearn.metrics.pairwise import pairwise_distances_chunked

logger = logging.getLogger(__name__)

INVALID_SCORE = -1.0
"""Score of a row that cannot be scored (NaN/inf input). Every measure's real scores are
>= 0, so this ranks last, and it stays a finite number that JSON and MLflow accept."""

RngLike = np.random.Generator | int | None

# ----------------------------------------------------------------------------- measures


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

# ---------------------------------------------------------------------- selector helpers


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


def _seed_for_sklearn(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


class _DistanceTo:
    """Distances from every pool row to one row of the pool: one pool-by-dim pass each.

    Euclidean uses the same expansion as sklearn, ``|x|^2 - 2 x.y + |y|^2``, in float64
    (float32 loses close distances to cancellation), with the pool's squared norms computed
    once; other metrics go through sklearn.
    """

    def __init__(self, pool: np.ndarray, metric: str) -> None:
        self.metric = metric
        self.pool = pool.astype(np.float64, copy=False) if metric == "euclidean" else pool
        self.sq_norms = (
            np.einsum("ij,ij->i", self.pool, self.pool) if metric == "euclidean" else None
        )

    def __call__(self, row: int) -> np.ndarray:
        if self.sq_norms is None:
            point = self.pool[row : row + 1]
            return pairwise_distances(self.pool, point, metric=self.metric).ravel()
        sq = self.pool @ (-2.0 * self.pool[row])
        sq += self.sq_norms
        sq += self.sq_norms[row]
        np.maximum(sq, 0.0, out=sq)
        sq[row] = 0.0
        return np.sqrt(sq, out=sq)


# ----------------------------------------------------------------------------- selectors


def top_k(scores: np.ndarray, k: int, rng: RngLike) -> np.ndarray:
    """The k highest scores, highest first; equal scores in seeded random order."""
    scores, k, rng = _as_scores(scores), _check_k(k), np.random.default_rng(rng)
    ok = _selectable(scores, None)
    tie_key = rng.permutation(len(scores))
    order = np.lexsort((tie_key, -np.where(ok, scores, 0.0), ~ok))  # last key sorts first
    return order[: min(k, len(scores))].astype(np.intp)


def ranked_batch(
    scores: np.ndarray,
    features: np.ndarray,
    labeled_features: np.ndarray | None,
    k: int,
    rng: RngLike,
    alpha: float | None = None,
    metric: str = "euclidean",
) -> np.ndarray:
    """Ranked batch-mode sampling (Cardoso et al. 2017), with modAL's picks.

    Each pick maximises ``alpha * (1 - 1/(1 + d)) + (1 - alpha) * score``, where ``d`` is
    the distance (sklearn ``metric``) to the nearest labeled or already picked sample.
    ``alpha=None`` is modAL's ``|U| / (|U| + |D|)``, recomputed before every pick. With
    no labeled features (modAL's cold start) the first pick is the sample with the least
    mean distance to the pool. ``scores`` should lie in [0, 1] (modAL uses
    ``least_confidence``) so both terms weigh alike.

    Unlike modAL, which recomputes distances to the whole labeled set for every pick, a
    running nearest distance per sample is updated with one pool-by-dim distance
    computation per pick. The cold start's mean distance still needs every pair, but in
    chunks of bounded memory. Divergences: exact ties go to the seeded generator (modAL
    takes the lowest index) and the cold-start sample is never picked twice.
    """
    scores, k, rng = _as_scores(scores), _check_k(k), np.random.default_rng(rng)
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"ranked_batch: alpha must be in [0, 1] or None (modAL's); got {alpha}")
    features = _as_features(features, len(scores))
    labeled = _as_labeled(labeled_features, features.shape[1])
    ok = _selectable(scores, features)
    idx = np.flatnonzero(ok)
    pool = features if ok.all() else features[idx]
    uncertainty = scores[idx]
    m = len(idx)
    n_picks = min(k, m)
    picks: list[int] = []
    if n_picks == 0:
        return _complete(np.array(picks, dtype=np.intp), ok, k, rng)

    distance_to = _DistanceTo(pool, metric)
    available = np.ones(m, dtype=bool)
    if len(labeled) == 0:
        first = _cold_start_medoid(pool, metric, rng)
        picks.append(first)
        available[first] = False
        nearest = distance_to(first)
        # modAL leaves the cold-start sample in its unlabeled count, so |U| starts at m.
        n_unlabeled, n_labeled = m, 1
    else:
        nearest = pairwise_distances_argmin_min(pool, labeled, metric=metric)[1]
        n_unlabeled, n_labeled = m, len(labeled)

    while len(picks) < n_picks:
        a = alpha if alpha is not None else n_unlabeled / (n_unlabeled + n_labeled)
        combined = a * (1 - 1 / (1 + nearest)) + (1 - a) * uncertainty
        combined[~available] = -np.inf
        best = _argmax_tie_random(combined, rng)
        picks.append(best)
        available[best] = False
        np.minimum(nearest, distance_to(best), out=nearest)
        n_unlabeled, n_labeled = n_unlabeled - 1, n_labeled + 1
    return _complete(idx[picks], ok, k, rng)


def _cold_start_medoid(pool: np.ndarray, metric: str, rng: np.random.Generator) -> int:
    """The sample with the least mean distance to all others (modAL's cold start).

    Euclidean: every row's distance sum in float32 first (matrix products at twice the
    float64 speed), then in float64 only for the rows within float32's error bound of the
    smallest sum: the exact computation's pick, for about half its work.
    """
    if metric != "euclidean":
        return _argmax_tie_random(-_distance_sums(pool, metric), rng)
    n, dim = pool.shape
    x = pool.astype(np.float32)
    sq_norms = np.einsum("ij,ij->i", x, x)
    sums = np.empty(n)
    step = max(1, 2**24 // n)  # 64 MiB blocks
    for start in range(0, n, step):
        rows = slice(start, start + step)
        sq = x[rows] @ (-2.0 * x.T)
        sq += sq_norms[rows, None]
        sq += sq_norms[None, :]
        np.maximum(sq, 0.0, out=sq)
        sums[rows] = np.sqrt(sq, out=sq).sum(axis=1, dtype=np.float64)
    # One float32 distance is off by at most sqrt((dim + 4) eps) * the largest norm (dot
    # product, expansion and square root), plus eps * norm from rounding the input: twice
    # that, summed over n, keeps every row that could be the exact minimum.
    eps = float(np.finfo(np.float32).eps)
    largest = float(np.sqrt(np.einsum("ij,ij->i", pool, pool, dtype=np.float64).max()))
    bound = 2.0 * n * (np.sqrt((dim + 4) * eps) + eps) * largest
    near = np.flatnonzero(sums <= sums.min() + 2.0 * bound)
    return int(near[_argmax_tie_random(-_distance_sums(pool, metric, near), rng)])


def _distance_sums(pool: np.ndarray, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Summed distance of each of `rows` (default all) to every pool sample, self-distance
    exactly 0, in chunks of 256 MiB."""
    rows = np.arange(len(pool)) if rows is None else rows

    def sums(chunk: np.ndarray, start: int) -> np.ndarray:
        chunk[np.arange(len(chunk)), rows[start : start + len(chunk)]] = 0.0
        return chunk.sum(axis=1)

    return np.concatenate(
        list(
            pairwise_distances_chunked(
                pool[rows], pool, metric=metric, reduce_func=sums, working_memory=256
            )
        )
    )


def kcenter_greedy(
    features: np.ndarray,
    labeled_features: np.ndarray | None,
    k: int,
    rng: RngLike,
    metric: str = "euclidean",
) -> np.ndarray:
    """Greedy k-center core-set (Sener & Savarese 2018): each pick is the sample farthest
    from everything labeled or picked so far. With nothing labeled the first pick is a
    seeded random sample. One pool-by-dim distance computation per pick."""
    k, rng = _check_k(k), np.random.default_rng(rng)
    features = _as_features(features, None)
    labeled = _as_labeled(labeled_features, features.shape[1])
    ok = _selectable(None, features)
    idx = np.flatnonzero(ok)
    pool = features if ok.all() else features[idx]
    n_picks = min(k, len(idx))
    picks: list[int] = []
    if n_picks == 0:
        return _complete(np.array(picks, dtype=np.intp), ok, k, rng)
    if len(labeled):
        nearest = pairwise_distances_argmin_min(pool, labeled, metric=metric)[1]
    else:
        nearest = np.full(len(pool), np.inf)
    distance_to = _DistanceTo(pool, metric)
    while len(picks) < n_picks:
        candidates = nearest.copy()
        candidates[picks] = -np.inf
        best = _argmax_tie_random(candidates, rng)
        picks.append(best)
        np.minimum(nearest, distance_to(best), out=nearest)
    return _complete(idx[picks], ok, k, rng)


def cluster_then_top(scores: np.ndarray, features: np.ndarray, k: int, rng: RngLike) -> np.ndarray:
    """k-means the given samples into k clusters; return each cluster's highest score,
    highest first (Cluster-Margin style, Citovsky et al. 2021, when fed the
    smallest-margin candidates). If fewer than k clusters come out (duplicate features),
    the next highest scores fill the batch."""
    scores, k, rng = _as_scores(scores), _check_k(k), np.random.default_rng(rng)
    features = _as_features(features, len(scores))
    ok = _selectable(scores, features)
    idx = np.flatnonzero(ok)
    n_picks = min(k, len(idx))
    if n_picks == 0:
        return _complete(np.array([], dtype=np.intp), ok, k, rng)
    labels = KMeans(
        n_clusters=n_picks, n_init="auto", random_state=_seed_for_sklearn(rng)
    ).fit_predict(features[idx])
    ranking = top_k(scores[idx], len(idx), rng)
    _, first_of_cluster = np.unique(labels[ranking], return_index=True)
    chosen = np.zeros(len(idx), dtype=bool)
    chosen[first_of_cluster] = True  # positions in `ranking`, so best first
    picks = np.concatenate([ranking[chosen], ranking[~chosen]])[:n_picks]
    return _complete(idx[picks], ok, k, rng)


def typiclust(
    features: np.ndarray,
    labeled_features: np.ndarray | None,
    k: int,
    rng: RngLike,
    max_clusters: int = 500,
    min_cluster_size: int = 5,
    n_neighbors: int = 20,
    selectable: np.ndarray | None = None,
) -> np.ndarray:
    """TypiClust (Hacohen et al. 2022): typical samples of uncovered clusters.

    k-means over pool and labeled features into ``min(n_labeled + k, max_clusters)``
    clusters. Each pick goes to the cluster with the fewest labeled or picked members
    (largest first; clusters under ``min_cluster_size`` only once the others run out) and
    takes its most typical unpicked sample: typicality is 1 / mean distance to the
    ``n_neighbors`` nearest neighbours within the cluster. Rows outside ``selectable``
    (default: all) are picked last, like rows with NaN/inf features.
    """
    k, rng = _check_k(k), np.random.default_rng(rng)
    features = _as_features(features, None)
    labeled = _as_labeled(labeled_features, features.shape[1])
    ok = _selectable(None, features)
    if selectable is not None:
        ok &= selectable
    idx = np.flatnonzero(ok)
    m = len(idx)
    n_picks = min(k, m)
    if n_picks == 0:
        return _complete(np.array([], dtype=np.intp), ok, k, rng)

    everything = np.concatenate([features[idx], labeled.astype(features.dtype)])
    n_clusters = max(1, min(len(labeled) + n_picks, max_clusters, len(everything)))
    # Like the paper's code: full k-means for few clusters, mini-batch beyond (7s -> 0.5s
    # for 500 clusters of 20k x 128).
    kmeans = KMeans if n_clusters <= 50 else MiniBatchKMeans
    labels = kmeans(
        n_clusters=n_clusters, n_init="auto", random_state=_seed_for_sklearn(rng)
    ).fit_predict(everything)
    pool_labels = labels[:m]
    size = np.bincount(labels, minlength=n_clusters)
    covered = np.bincount(labels[m:], minlength=n_clusters)
    unpicked = np.bincount(pool_labels, minlength=n_clusters)
    cluster_tie_key = rng.permutation(n_clusters)
    picked = np.zeros(m, dtype=bool)
    spread: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # cluster -> (pool rows, mean kNN)
    picks: list[int] = []
    while len(picks) < n_picks:
        open_ = unpicked > 0
        if (open_ & (size >= min_cluster_size)).any():
            open_ &= size >= min_cluster_size
        order = np.lexsort((cluster_tie_key, -size, covered))  # last key sorts first
        cluster = int(order[open_[order]][0])
        if cluster not in spread:
            members = np.flatnonzero(labels == cluster)  # rows of `everything`
            knn = _mean_knn_distance(everything[members], n_neighbors)
            spread[cluster] = (members[members < m], knn[members < m])
        rows, knn = spread[cluster]
        best = int(rows[_argmax_tie_random(np.where(picked[rows], -np.inf, -knn), rng)])
        picks.append(best)
        picked[best] = True
        covered[cluster] += 1
        unpicked[cluster] -= 1
    return _complete(idx[picks], ok, k, rng)


def _mean_knn_distance(points: np.ndarray, n_neighbors: int, block: int = 2**22) -> np.ndarray:
    """Mean euclidean distance of each point to its nearest neighbours among the others,
    in row blocks of about ``block`` distances, so a huge cluster stays within memory."""
    n = len(points)
    n_neighbors = min(n_neighbors, n - 1)
    if n_neighbors < 1:
        return np.zeros(n)
    points = points.astype(np.float64, copy=False)
    sq_norms = np.einsum("ij,ij->i", points, points)
    means = np.empty(n)
    step = max(1, block // n)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        sq = sq_norms[rows, None] - 2.0 * points[rows] @ points.T + sq_norms[None, :]
        np.maximum(sq, 0.0, out=sq)
        sq[np.arange(sq.shape[0]), np.arange(start, rows.stop)] = np.inf  # not itself
        nearest = np.partition(sq, n_neighbors - 1, axis=1)[:, :n_neighbors]
        means[rows] = np.sqrt(nearest).mean(axis=1)
    return means


# ------------------------------------------------------------------------------ registry


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
    """
    labeled = 0 if pool.labeled_features is None else len(pool.labeled_features)
    if pool.confidence is None or labeled < typical_per_class * (pool.classes or 0):
        share = 1.0
    else:
        share = float(np.clip(1 - pool.confidence, 0, 1))
    diverse = _select_typiclust(
        scores, int(round(k * share)), rng, pool, max_clusters, min_cluster_size, n_neighbors
    )
    rest = np.setdiff1d(np.arange(len(scores)), diverse)
    rest_pool = _Pool(pool.features[rest], None, pool.confidence, pool.candidates)
    uncertain = rest[_select_cluster_margin(scores[rest], k - len(diverse), rng, rest_pool)]
    parts = [diverse, uncertain] if share >= 0.5 else [uncertain, diverse]
    return np.concatenate(parts).astype(np.intp)


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
    pool = _Pool(features, labeled_features, pool_confidence, candidates, classes)
    indices = SELECTORS[strategy.selector](scores, k, rng, pool, **params)
    return np.asarray(indices, dtype=np.intp), scores
