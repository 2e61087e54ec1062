"""Strategies: planted answers for every measure and selector, NaN guards, seeded ties,
and pick-for-pick parity with modAL on random inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from modAL.batch import uncertainty_batch_sampling
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

from activelearn import strategies as st
from activelearn.strategies.clusters import _mean_knn_distance
from activelearn.strategies.registry import _NEEDS_FEATURES
from activelearn.strategies.selectors import _cold_start_medoid

# Rows planted so each uncertainty measure has a different winner:
#   row 0: confident; row 1: two classes tied (smallest margin);
#   row 2: spread over three classes (least confident, highest entropy).
PLANTED = np.array(
    [
        [0.98, 0.01, 0.01],
        [0.50, 0.50, 0.00],
        [0.40, 0.30, 0.30],
    ]
)

# MC samples [n, classes, T=4]:
#   row 0: every sample [0.5, 0.5] (uncertain but in agreement: BALD 0);
#   row 1: samples confidently disagree (BALD log 2, votes split 2-2);
#   row 2: confident and in agreement.
MC = np.stack(
    [
        np.array([[0.5, 0.5]] * 4).T,
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]).T,
        np.array([[0.9, 0.1]] * 4).T,
    ]
)


class FakeLearner:
    """Just what modAL's query functions read: predict_proba, X_training, on_transformed.

    A stand-in for modAL's ActiveLearner on purpose: parity means the same picks from the
    same probabilities, so modAL's real query functions read these fixed ones."""

    def __init__(self, probas: np.ndarray, labeled: np.ndarray | None = None) -> None:
        self.probas = probas
        self.X_training = labeled
        self.on_transformed = False

    def predict_proba(self, X, **kwargs):  # noqa: N803 (sklearn's argument name)
        assert len(X) == len(self.probas)
        return self.probas


def blobs(rng: np.random.Generator, centers: list[list[float]], sizes: list[int], spread=0.1):
    """Gaussian blobs; returns (points, blob id of each point)."""
    points = [rng.normal(c, spread, size=(s, len(c))) for c, s in zip(centers, sizes, strict=True)]
    ids = np.repeat(np.arange(len(sizes)), sizes)
    return np.concatenate(points), ids


# ------------------------------------------------------------------------------ measures


def test_measures_pick_planted_rows() -> None:
    assert st.least_confidence(PLANTED).argmax() == 2
    assert st.margin(PLANTED).argmax() == 1
    assert st.entropy(PLANTED).argmax() == 2
    np.testing.assert_allclose(st.least_confidence(PLANTED), [0.02, 0.5, 0.6])
    np.testing.assert_allclose(st.margin(PLANTED), [0.03, 1.0, 0.9])
    np.testing.assert_allclose(st.entropy([[0.5, 0.5, 0.0]]), [np.log(2)])


def test_mc_measures_pick_disagreement() -> None:
    np.testing.assert_allclose(st.bald(MC), [0.0, np.log(2), 0.0], atol=1e-12)
    np.testing.assert_allclose(st.variation_ratio(MC), [0.0, 0.5, 0.0])
    # Averaged over T, rows 0 and 1 are the same [0.5, 0.5]: entropy cannot tell them apart.
    np.testing.assert_allclose(st.entropy(MC), [np.log(2), np.log(2), st.entropy([[0.9, 0.1]])[0]])


def test_random_measure_is_seeded() -> None:
    a, b = st.random(PLANTED, 7), st.random(PLANTED, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert ((a >= 0) & (a < 1)).all()
    assert not np.array_equal(a, st.random(PLANTED, 8))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(3), "shape"),
        (np.ones((2, 0)), "shape"),
        (np.ones((2, 2, 2, 2)), "shape"),
        (np.array([[2.0, -1.0]]), "logits"),
        (np.array([[0.5, 0.9]]), "sum to 1"),
    ],
)
def test_measures_reject_malformed_probas(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        st.entropy(bad)


@pytest.mark.parametrize("measure", [st.bald, st.variation_ratio])
def test_mc_measures_need_samples_axis(measure) -> None:
    with pytest.raises(ValueError, match="Monte-Carlo"):
        measure(PLANTED)


@pytest.mark.parametrize("name", list(st.MEASURES))
def test_nan_rows_score_last_and_are_logged(name: str, caplog) -> None:
    probas = np.repeat(MC, 5, axis=0)  # 15 rows [n, 2, 4]
    probas[3, 0, 0] = np.nan
    probas[7, 1, 2] = np.inf
    measure = st.MEASURES[name]
    with caplog.at_level(logging.WARNING, logger="activelearn.strategies"):
        scores = measure(probas, 0) if measure is st.random else measure(probas)
    assert np.isfinite(scores).all()
    assert scores[3] == scores[7] == st.INVALID_SCORE
    assert (np.delete(scores, [3, 7]) > st.INVALID_SCORE).all()
    assert "2 of 15 rows" in caplog.text


# ----------------------------------------------------------------------------- selectors


def test_top_k_orders_by_score() -> None:
    np.testing.assert_array_equal(st.top_k([0.1, 0.9, 0.5, 0.7], 3, 0), [1, 3, 2])
    assert len(st.top_k([0.1, 0.2], 5, 0)) == 2
    assert len(st.top_k([0.1, 0.2], 0, 0)) == 0
    with pytest.raises(ValueError, match="non-negative integer"):
        st.top_k([0.1], -1, 0)


def test_top_k_ties_follow_the_seed_not_array_order() -> None:
    tied = np.full(50, 0.5)
    first = st.top_k(tied, 10, 3)
    np.testing.assert_array_equal(first, st.top_k(tied, 10, np.random.default_rng(3)))
    assert not np.array_equal(first, st.top_k(tied, 10, 4))
    assert not np.array_equal(first, np.arange(10))
    # Ties only reorder equals: the single best still comes first.
    tied[17] = 0.6
    assert st.top_k(tied, 5, 3)[0] == 17


def test_ranked_batch_ties_follow_the_seed() -> None:
    features = np.zeros((40, 3))  # all identical: every candidate ties at every step
    picks = [tuple(st.ranked_batch(np.full(40, 0.5), features, None, 5, s)) for s in range(4)]
    assert picks[0] == tuple(st.ranked_batch(np.full(40, 0.5), features, None, 5, 0))
    assert len(set(picks)) > 1


def test_ranked_batch_balances_distance_and_uncertainty() -> None:
    rng = np.random.default_rng(0)
    features, ids = blobs(rng, [[3, 0], [10, 0]], [20, 20])
    labeled = np.array([[0.0, 0.0]])
    scores = np.where(ids == 0, 0.9, 0.1)  # near blob more uncertain, far blob unexplored
    first_two = st.ranked_batch(scores, features, labeled, 2, 0)
    assert ids[first_two[0]] == 1  # alpha = 40/41: distance dominates
    assert ids[first_two[1]] == 0  # far blob now covered: the near blob is farther
    # alpha = 0: pure uncertainty, the near blob's samples only
    assert (ids[st.ranked_batch(scores, features, labeled, 5, 0, alpha=0.0)] == 0).all()


def test_kcenter_covers_far_clusters_first() -> None:
    rng = np.random.default_rng(1)
    features, ids = blobs(rng, [[0, 0], [5, 0], [0, 20]], [30, 30, 30])
    picks = st.kcenter_greedy(features, features[ids == 0][:3], 2, 0)
    assert list(ids[picks]) == [2, 1]
    cold = st.kcenter_greedy(features, None, 3, 0)
    assert sorted(ids[cold]) == [0, 1, 2]


def test_cluster_then_top_takes_best_of_each_cluster() -> None:
    rng = np.random.default_rng(2)
    features, ids = blobs(rng, [[0, 0], [10, 0], [0, 10]], [15, 15, 15])
    scores = rng.uniform(0, 0.5, len(ids))
    best_of = {0: 4, 1: 20, 2: 40}
    scores[list(best_of.values())] = [0.9, 0.7, 0.8]
    picks = st.cluster_then_top(scores, features, 3, 0)
    np.testing.assert_array_equal(picks, [4, 40, 20])  # one per cluster, best first


def test_typiclust_picks_dense_core_of_largest_uncovered_cluster() -> None:
    rng = np.random.default_rng(3)
    features, ids = blobs(rng, [[0, 0], [10, 0], [0, 10]], [60, 40, 25], spread=1.0)
    core = [70, 71, 72, 73, 74]  # a tight knot at the middle of blob 1
    features[core] = [10, 0] + rng.normal(0, 0.01, (5, 2))
    labeled = np.array([[0.0, 0.0]])  # blob 0, the largest, is already covered
    picks = st.typiclust(features, labeled, 2, 0)
    assert picks[0] in core
    assert ids[picks[1]] == 2  # then the next-largest uncovered cluster
    assert list(ids[st.typiclust(features, labeled, 3, 0)]).count(1) == 1


def test_typicality_is_mean_distance_to_nearest_neighbours() -> None:
    points = np.random.default_rng(4).normal(size=(300, 6))
    expected = NearestNeighbors(n_neighbors=20).fit(points).kneighbors()[0].mean(axis=1)
    np.testing.assert_allclose(_mean_knn_distance(points, 20, block=1000), expected)
    assert _mean_knn_distance(points[:1], 20).tolist() == [0.0]


SELECTOR_CALLS = {
    "top_k": lambda s, f, lab, k, r: st.top_k(s, k, r),
    "ranked_batch": lambda s, f, lab, k, r: st.ranked_batch(s, f, lab, k, r),
    "ranked_batch_cold": lambda s, f, lab, k, r: st.ranked_batch(s, f, None, k, r),
    "kcenter_greedy": lambda s, f, lab, k, r: st.kcenter_greedy(f, lab, k, r),
    "cluster_then_top": lambda s, f, lab, k, r: st.cluster_then_top(s, f, k, r),
    "typiclust": lambda s, f, lab, k, r: st.typiclust(f, lab, k, r),
}
BAD_SCORE_ROWS, BAD_FEATURE_ROWS = [3, 30], [11]
UNSELECTABLE = {  # the selector ranks by scores, features or both
    "top_k": BAD_SCORE_ROWS,
    "ranked_batch": BAD_SCORE_ROWS + BAD_FEATURE_ROWS,
    "ranked_batch_cold": BAD_SCORE_ROWS + BAD_FEATURE_ROWS,
    "kcenter_greedy": BAD_FEATURE_ROWS,
    "cluster_then_top": BAD_SCORE_ROWS + BAD_FEATURE_ROWS,
    "typiclust": BAD_FEATURE_ROWS,
}


@pytest.mark.parametrize("name", list(SELECTOR_CALLS))
@pytest.mark.parametrize("k", [1, 10, 60])
def test_selectors_return_unique_indices_and_take_invalid_rows_last(name: str, k: int) -> None:
    rng = np.random.default_rng(5)
    features = rng.normal(size=(50, 4))
    scores = rng.uniform(size=50)
    # Broken rows would be the first picks if they were not guarded: top score, far away.
    scores[BAD_SCORE_ROWS] = [np.nan, st.INVALID_SCORE]
    features[BAD_SCORE_ROWS] = [[100.0] * 4, [-100.0] * 4]
    features[BAD_FEATURE_ROWS] = np.inf
    scores[BAD_FEATURE_ROWS] = 1.0
    picks = SELECTOR_CALLS[name](scores, features, features[:2] + 0.01, k, 0)
    assert picks.dtype.kind == "i"
    assert len(picks) == min(k, 50)
    assert len(set(picks.tolist())) == len(picks)
    unselectable = set(UNSELECTABLE[name])
    assert not unselectable & set(picks[: 50 - len(unselectable)].tolist())


def test_selectors_handle_empty_pool() -> None:
    empty = np.empty((0, 3))
    assert len(st.ranked_batch(np.empty(0), empty, None, 5, 0)) == 0
    assert len(st.kcenter_greedy(empty, None, 5, 0)) == 0
    assert len(st.typiclust(empty, None, 5, 0)) == 0
    assert len(st.cluster_then_top(np.empty(0), empty, 5, 0)) == 0


# --------------------------------------------------------------------------- modAL parity


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (st.least_confidence, uncertainty_sampling),
        (st.margin, margin_sampling),
        (st.entropy, entropy_sampling),
    ],
)
def test_uncertainty_picks_match_modal(seed: int, ours, theirs) -> None:
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.full(5, 0.7), size=300)
    features = rng.normal(size=(300, 4))
    modal_picks, _ = theirs(FakeLearner(probas), features, n_instances=25)
    our_picks = st.top_k(ours(probas), 25, seed)
    assert set(our_picks.tolist()) == set(modal_picks.tolist())  # modAL's come unordered


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n_labeled", [0, 1, 40])
def test_ranked_batch_matches_modal(seed: int, n_labeled: int) -> None:
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.full(4, 0.5), size=300)
    features = rng.normal(size=(300, 6))
    labeled = rng.normal(size=(n_labeled, 6)) if n_labeled else None  # None: modAL cold start
    modal_picks, _ = uncertainty_batch_sampling(
        FakeLearner(probas, labeled), features, n_instances=30
    )
    ours = st.ranked_batch(st.least_confidence(probas), features, labeled, 30, seed)
    np.testing.assert_array_equal(ours, modal_picks)


def test_cold_start_medoid_is_exact_where_float32_cannot_tell() -> None:
    """Far from the origin float32 loses the differences between mean distances; the
    float64 pass over the near-best rows must still find modAL's (exact) first pick."""
    rng = np.random.default_rng(5)
    features = 1e4 + rng.normal(scale=1e-2, size=(400, 8))
    exact = np.argmin(pairwise_distances(features).mean(axis=0))
    assert _cold_start_medoid(features, "euclidean", np.random.default_rng(0)) == exact
    pick = st.ranked_batch(np.zeros(400), features, None, 1, 0)
    modal_pick, _ = uncertainty_batch_sampling(FakeLearner(np.full((400, 2), 0.5)), features, 1)
    np.testing.assert_array_equal(pick, modal_pick)


def test_ranked_batch_matches_modal_with_other_metric_and_float32() -> None:
    rng = np.random.default_rng(3)
    probas = rng.dirichlet(np.ones(3), size=200)
    features = rng.normal(size=(200, 5))
    labeled = rng.normal(size=(10, 5))
    for metric in ("manhattan", "cosine"):
        modal_picks, _ = uncertainty_batch_sampling(
            FakeLearner(probas, labeled), features, n_instances=20, metric=metric
        )
        ours = st.ranked_batch(st.least_confidence(probas), features, labeled, 20, 0, metric=metric)
        np.testing.assert_array_equal(ours, modal_picks)
    modal_picks, _ = uncertainty_batch_sampling(FakeLearner(probas, labeled), features, 20)
    ours = st.ranked_batch(st.least_confidence(probas), features.astype(np.float32), labeled, 20, 0)
    np.testing.assert_array_equal(ours, modal_picks)


# ------------------------------------------------------------------------------ registry


def test_registry_names() -> None:
    assert set(st.STRATEGIES) == {
        "least_confidence",
        "margin",
        "entropy",
        "random",
        "bald",
        "variation_ratio",
        "ranked_batch",
        "cluster_margin",
        "typiclust",
        "coldstart_kcenter",
        "hybrid",
    }


@pytest.mark.parametrize("name", list(st.STRATEGIES))
def test_select_batch_runs_every_strategy(name: str) -> None:
    rng = np.random.default_rng(6)
    probas = rng.dirichlet(np.ones(3), size=(120, 5)).transpose(0, 2, 1)  # [n, classes, T]
    features = rng.normal(size=(120, 8))
    indices, scores = st.select_batch(
        name, probas, 12, 0, features=features, labeled_features=features[:4] + 0.1
    )
    assert len(indices) == 12 and len(set(indices.tolist())) == 12
    assert scores.shape == (120,) and np.isfinite(scores).all()
    again, _ = st.select_batch(
        name, probas, 12, 0, features=features, labeled_features=features[:4] + 0.1
    )
    np.testing.assert_array_equal(indices, again)


@pytest.mark.parametrize("name", list(st.STRATEGIES))
def test_every_strategy_takes_rows_it_cannot_score_last(name: str) -> None:
    rng = np.random.default_rng(7)
    probas = rng.dirichlet(np.ones(3), size=(60, 5)).transpose(0, 2, 1)
    features = rng.normal(size=(60, 8))
    probas[0], features[0] = np.nan, 0.0  # no prediction, at the centre of the pool
    probas[1], features[1] = 1 / 3, np.nan  # the most uncertain, without features
    picks, _ = st.select_batch(
        name, probas, 12, 0, features=features, labeled_features=features[2:6], candidates=12
    )
    strategy = st.STRATEGIES[name]
    unusable = {0} if strategy.measure else set()  # without a measure, row 0 is a row
    if strategy.selector in _NEEDS_FEATURES:
        unusable.add(1)
    assert not unusable & set(picks.tolist())
    empty, scores = st.select_batch(name, probas[:0], 5, 0, features=features[:0])
    assert len(empty) == 0 == len(scores)


def test_select_batch_scores_and_top_k_agree() -> None:
    indices, scores = st.select_batch("margin", PLANTED, 1, 0)
    assert indices.tolist() == [1]
    np.testing.assert_allclose(scores, st.margin(PLANTED))


def test_select_batch_cold_start_without_model() -> None:
    features = np.random.default_rng(7).normal(size=(60, 3))
    picks = {}
    for name in ("random", "typiclust", "coldstart_kcenter", "hybrid"):
        picks[name], _ = st.select_batch(name, None, 5, 0, features=features)
        assert len(set(picks[name].tolist())) == 5
    kcenter = st.kcenter_greedy(features, None, 5, np.random.default_rng(0))
    assert picks["coldstart_kcenter"].tolist() == kcenter.tolist()
    assert picks["hybrid"].tolist() == picks["typiclust"].tolist()  # no model: all typical
    assert picks["random"].tolist() != picks["typiclust"].tolist()
    with pytest.raises(ValueError, match="needs class probabilities"):
        st.select_batch("entropy", None, 5, 0, features=features)


def test_select_batch_explains_bad_calls() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'entropyy'; choose one of"):
        st.select_batch("entropyy", PLANTED, 1, 0)
    with pytest.raises(ValueError, match="needs features"):
        st.select_batch("typiclust", PLANTED, 1, 0)
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['alfa'\]"):
        st.select_batch("ranked_batch", PLANTED, 1, 0, features=np.eye(3), alfa=0.5)
    with pytest.raises(ValueError, match="features has 2 rows but probas has 3"):
        st.select_batch("ranked_batch", PLANTED, 1, 0, features=np.eye(2))


def test_hybrid_gives_typiclust_the_share_the_model_expects_to_get_wrong() -> None:
    rng = np.random.default_rng(8)
    probas = rng.dirichlet(np.ones(4), size=200)
    features = rng.normal(size=(200, 5))
    labeled = rng.normal(size=(12, 5))  # 3 per class: past the typical-only start

    def select(name, confidence=None, probas=probas, **params):
        return st.select_batch(
            name,
            probas,
            8,
            1,
            features=features,
            labeled_features=labeled,
            pool_confidence=confidence,
            **params,
        )[0]

    typi, cm = select("typiclust"), select("cluster_margin")
    np.testing.assert_array_equal(select("hybrid", 0.0), typi)  # always wrong: all typical
    np.testing.assert_array_equal(select("hybrid", 1.0), cm)  # always right: all uncertain
    quarter = select("hybrid", 0.75)  # a quarter expected wrong: 6 uncertain, 2 typical
    assert len(set(quarter.tolist())) == 8
    two_typical = st.select_batch(
        "typiclust", probas, 2, 1, features=features, labeled_features=labeled
    )[0]
    np.testing.assert_array_equal(quarter[6:], two_typical)
    # Without a pool-wide figure, the confidence of the probas given is used.
    confident = np.full((200, 4), 0.01)
    confident[:, 0] = 0.97
    np.testing.assert_array_equal(
        select("hybrid", probas=confident), select("hybrid", 0.97, probas=confident)
    )


def test_hybrid_picks_only_typical_images_until_it_knows_three_labels_per_class() -> None:
    """A confident model on 11 labels of 4 classes still gets an all-typical batch: small
    networks are confident long before they are right."""
    rng = np.random.default_rng(9)
    probas = rng.dirichlet(np.ones(4), size=200)
    features = rng.normal(size=(200, 5))
    few = rng.normal(size=(11, 5))

    def select(name, **params):
        return st.select_batch(
            name,
            probas,
            8,
            1,
            features=features,
            labeled_features=few,
            pool_confidence=1.0,
            **params,
        )[0]

    np.testing.assert_array_equal(select("hybrid"), select("typiclust"))
    np.testing.assert_array_equal(select("hybrid", typical_per_class=2), select("cluster_margin"))


def test_mean_confidence_skips_rows_it_cannot_score() -> None:
    assert st.mean_confidence(np.array([[0.9, 0.1], [np.nan, 0.5], [0.6, 0.4]])) == 0.75
    assert st.mean_confidence(np.zeros((0, 3))) is None
