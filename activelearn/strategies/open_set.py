"""Open-set pools: how likely a candidate is to belong to one of the known classes, learned
from the images people answered "other" (none of the classes) for.

A pool holds images of no class: answering them buys nothing. Uncertainty and diversity
rank such images first (a block of them is a large uncovered cluster, and the model cannot
place them), so left alone a strategy spends more answers on them than random picks
(MQ-Net, Park et al. NeurIPS 2022; LfOSA, Ning et al. CVPR 2022). Both papers weigh a
candidate's informativeness by its *purity*, the chance it is of a known class; LfOSA
learns that chance from the unknown-class images already queried, which is what a
campaign has once people answer "other". Here it is a nearest-neighbour distance ratio in
the model's feature space: a candidate nearer to the "other" answers than to the labeled
images is more likely another "other". No extra model, nothing to train, and without any
"other" answer every candidate weighs 1: the strategies behave exactly as without it.

Before the first "other" answer a campaign that expects a dirty pool can weigh by a prior
instead (`max_logit_known_probability`): the model's largest logit, which stays low on
images of no class (Hendrycks et al., "Scaling out-of-distribution detection", ICML
2022), split into a high and a low group as LfOSA splits its max activations.
"""

from __future__ import annotations

import numpy as np

from activelearn.strategies._inputs import _as_features, _as_labeled


def known_class_probability(
    features: np.ndarray,
    labeled_features: np.ndarray | None,
    other_features: np.ndarray | None,
    n_neighbors: int = 3,
) -> np.ndarray:
    """The chance each candidate belongs to a known class, in [0, 1], shape ``[n]``.

    ``d_other / (d_known + d_other)``, with ``d_known`` the mean euclidean distance to
    the ``n_neighbors`` nearest labeled images and ``d_other`` to the nearest "other"
    answers (all embedded by the same model). 1 everywhere when there is no "other"
    answer or no labeled image to compare with; 0.5 where both distances are 0. A row
    with NaN/inf features gets 0.5 (selectors take such rows last anyway).
    """
    features = _as_features(features, None)
    n, dim = features.shape
    labeled = _as_labeled(labeled_features, dim)
    other = _as_labeled(other_features, dim)
    if not len(other) or not len(labeled):
        return np.ones(n)
    d_known = _mean_nearest(features, labeled, n_neighbors)
    d_other = _mean_nearest(features, other, n_neighbors)
    total = d_known + d_other
    with np.errstate(invalid="ignore", divide="ignore"):
        chance = np.where(total > 0, d_other / total, 0.5)
    return np.where(np.isfinite(chance), chance, 0.5)


def max_logit_known_probability(logits: np.ndarray, min_rows: int = 20) -> np.ndarray:
    """The chance each candidate belongs to a known class judged by its largest logit
    alone, in [0, 1], shape ``[n]``: a two-component Gaussian mixture over the candidates'
    max logits, and each one's posterior of the higher component. Unlike the softmax's
    top probability, the max logit keeps how strongly the image looks like *any* class,
    so an image torn between two known classes (a high margin score, worth an answer)
    still scores high, and one like none of them scores low. 1 everywhere with fewer than
    ``min_rows`` finite rows or no spread; 0.5 for a row with NaN/inf logits.
    """
    from sklearn.mixture import GaussianMixture

    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1) if logits.size else np.zeros(len(logits))
    finite = np.isfinite(top)
    if finite.sum() < min_rows or np.ptp(top[finite]) == 0:
        return np.ones(len(logits))
    mixture = GaussianMixture(2, random_state=0).fit(top[finite, None])
    high = int(np.argmax(mixture.means_[:, 0]))
    chance = np.full(len(logits), 0.5)
    chance[finite] = mixture.predict_proba(top[finite, None])[:, high]
    return chance


def _mean_nearest(points: np.ndarray, references: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Mean distance of each point to its ``n_neighbors`` nearest references."""
    k = max(1, min(n_neighbors, len(references)))
    points = points.astype(np.float64, copy=False)
    references = references.astype(np.float64, copy=False)
    sq = (
        np.einsum("ij,ij->i", points, points)[:, None]
        - 2.0 * points @ references.T
        + np.einsum("ij,ij->i", references, references)[None, :]
    )
    nearest = np.partition(np.maximum(sq, 0.0), k - 1, axis=1)[:, :k]
    return np.sqrt(nearest).mean(axis=1)


def alike_groups(features: np.ndarray, min_size: int, rng) -> list[np.ndarray]:
    """Groups of at least ``min_size`` alike rows (k-means, about ``2 * min_size`` rows a
    cluster), largest first: "other" answers that keep coming from one kind of image, a
    candidate new class. Indices into ``features``; none if ``min_size`` < 1."""
    from sklearn.cluster import KMeans

    features = _as_features(features, None)
    finite = np.flatnonzero(np.isfinite(features).all(axis=1))
    if min_size < 1 or len(finite) < min_size:
        return []
    n_clusters = max(1, len(finite) // (2 * min_size))
    seed = int(np.random.default_rng(rng).integers(2**31 - 1))
    labels = KMeans(n_clusters=n_clusters, n_init="auto", random_state=seed).fit_predict(
        features[finite]
    )
    groups = [finite[labels == c] for c in range(n_clusters)]
    return sorted((g for g in groups if len(g) >= min_size), key=len, reverse=True)
