"""Open-set pools: the known-class weighting of the hybrid on planted features, and that
without any "other" answer the hybrid picks exactly what it picked before."""

from __future__ import annotations

import numpy as np
import pytest

from activelearn import strategies as st
from activelearn.strategies.open_set import known_class_probability

KNOWN_CENTRES = np.array([[0.0, 0.0], [10.0, 0.0]])
UNKNOWN_CENTRE = np.array([5.0, 9.0])


def planted(seed: int = 0):
    """A pool of 2 known classes (20 images each) and a block of 40 of no class, which
    the model cannot place: uniform probabilities, the highest margin score."""
    rng = np.random.default_rng(seed)
    known = np.concatenate([c + rng.normal(scale=0.8, size=(20, 2)) for c in KNOWN_CENTRES])
    unknown = UNKNOWN_CENTRE + rng.normal(scale=0.8, size=(40, 2))
    features = np.concatenate([known, unknown])
    probas = np.concatenate(
        [
            rng.dirichlet([8, 2], size=40),  # known: the model is fairly sure
            np.full((40, 2), 0.5) + rng.normal(scale=0.01, size=(40, 1)) * [1, -1],
        ]
    )
    labeled = np.concatenate([c + rng.normal(scale=0.8, size=(3, 2)) for c in KNOWN_CENTRES])
    others = UNKNOWN_CENTRE + rng.normal(scale=0.8, size=(3, 2))
    is_known = np.arange(80) < 40
    return probas, features, labeled, others, is_known


def test_known_class_probability_is_high_near_labeled_images_low_near_other_answers():
    _, features, labeled, others, is_known = planted()
    chance = known_class_probability(features, labeled, others)
    assert chance.shape == (80,) and ((chance >= 0) & (chance <= 1)).all()
    assert chance[is_known].min() > 0.5 > chance[~is_known].max()
    # No "other" answer (or nothing labeled to compare with): no information, all 1.
    np.testing.assert_array_equal(known_class_probability(features, labeled, None), 1.0)
    np.testing.assert_array_equal(known_class_probability(features, None, others), 1.0)
    np.testing.assert_array_equal(known_class_probability(features, labeled, others[:0]), 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_the_hybrid_puts_known_class_candidates_first_once_images_were_answered_other(seed):
    probas, features, labeled, others, is_known = planted(seed)

    def select(**params):
        return st.select_batch(
            "hybrid",
            probas,
            8,
            seed,
            features=features,
            labeled_features=labeled,
            pool_confidence=0.5,  # half the batch typical, half uncertain
            **params,
        )[0]

    weighted = select(other_features=others)
    assert is_known[weighted].all()  # every pick of a known class
    # Today's hybrid, on the same pool: the unknown block is its largest uncovered
    # cluster and holds its highest margins, so it spends answers there.
    closed = select(other_features=others, known_class_weighting=False)
    assert (~is_known[closed]).sum() >= 4
    np.testing.assert_array_equal(closed, select())


@pytest.mark.parametrize("seed", range(3))
def test_without_other_answers_the_hybrid_picks_exactly_what_it_did_before(seed):
    """The closed-set digits table cannot move: no "other" answer, same picks to the index."""
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.ones(4), size=300)
    features = rng.normal(size=(300, 6))
    labeled = rng.normal(size=(16, 6))
    for confidence in (0.3, 0.8, 0.97):
        kwargs = dict(features=features, labeled_features=labeled, pool_confidence=confidence)
        before = st.select_batch("hybrid", probas, 10, seed, known_class_weighting=False, **kwargs)
        for others in (None, np.empty((0, 6))):
            now = st.select_batch("hybrid", probas, 10, seed, other_features=others, **kwargs)
            np.testing.assert_array_equal(now[0], before[0])
            np.testing.assert_array_equal(now[1], before[1])
