"""Selectors on k-means clusters of the feature vectors: the best score of each cluster
(Cluster-Margin, Citovsky et al. 2021) and the typical samples of uncovered clusters
(TypiClust, Hacohen et al. 2022). Same contract as the other selectors (see
``activelearn.strategies.selectors``).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

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
from activelearn.strategies.selectors import top_k


def _seed_for_sklearn(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


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
