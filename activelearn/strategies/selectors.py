"""Selectors on scores and distances: top-k, ranked batch (Cardoso et al. 2017) and the
greedy k-center core-set (Sener & Savarese 2018).

Each returns indices into the given arrays, most important first, ``min(k, n)`` of them,
never a duplicate; rows it cannot rank (NaN/inf, ``INVALID_SCORE``) come after all others.
Ties are broken by the caller's seeded ``numpy.random.Generator``, never by array order.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin_min
from sklearn.metrics.pairwise import pairwise_distances_chunked

from activelearn.strategies._inputs import (
    RngLike,
    _argmax_tie_random,
    _as_features,
    _as_labeled,
    _as_scores,
    _check_k,
    _complete,
    _selectable,
)


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
