"""Open-set pools: the known-class weighting of the hybrid on planted features, its
max-logit prior before any "other" answer, and that without either the hybrid picks
exactly what it picked before."""

from __future__ import annotations

import numpy as np
import pytest

from activelearn import strategies as st
from activelearn.config import StrategyConfig
from activelearn.errors import StrategyError
from activelearn.strategies.open_set import known_class_probability, max_logit_known_probability
from activelearn.strategies.registry import check_strategy

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


def planted_logits(probas, is_known, seed: int = 0):
    """Logits giving `probas`: strong evidence for some known class on the known images,
    weak for every class on the rest (the same softmax can come from either)."""
    rng = np.random.default_rng(seed)
    strength = np.where(is_known, 6.0, 0.5) + rng.normal(scale=0.3, size=len(probas))
    return np.log(probas) + strength[:, None]


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


def test_max_logit_prior_separates_strong_from_weak_evidence_and_needs_enough_rows():
    probas, _, _, _, is_known = planted()
    logits = planted_logits(probas, is_known)
    chance = max_logit_known_probability(logits)
    assert chance[is_known].min() > 0.5 > chance[~is_known].max()
    np.testing.assert_array_equal(max_logit_known_probability(logits[:10]), 1.0)  # too few
    np.testing.assert_array_equal(max_logit_known_probability(np.ones((50, 3))), 1.0)
    logits[0] = np.nan
    assert max_logit_known_probability(logits)[0] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_the_max_logit_prior_puts_known_class_candidates_first_before_any_other_answer(seed):
    probas, features, labeled, _, is_known = planted(seed)
    logits = planted_logits(probas, is_known, seed)
    kwargs = dict(features=features, labeled_features=labeled, pool_confidence=0.5)
    prior = st.select_batch(
        "hybrid", probas, 8, seed, logits=logits, known_class_prior="max_logit", **kwargs
    )[0]
    assert is_known[prior].all()
    default = st.select_batch("hybrid", probas, 8, seed, logits=logits, **kwargs)[0]
    assert (~is_known[default]).sum() >= 4  # off by default: logits alone change nothing
    np.testing.assert_array_equal(default, st.select_batch("hybrid", probas, 8, seed, **kwargs)[0])


def test_the_max_logit_prior_names_what_it_needs():
    probas, features, labeled, _, _ = planted()
    with pytest.raises(StrategyError, match="needs the model.s logits.*known_class_prior=null"):
        st.select_batch(
            "hybrid",
            probas,
            8,
            0,
            features=features,
            labeled_features=labeled,
            known_class_prior="max_logit",
        )
    # Before the first model (no probabilities) it has nothing to weigh: typical images.
    cold = st.select_batch("hybrid", None, 8, 0, features=features, known_class_prior="max_logit")
    assert len(cold[0]) == 8
    with pytest.raises(StrategyError, match="known_class_prior='energy'.*max_logit"):
        check_strategy(StrategyConfig(params={"known_class_prior": "energy"}))
    check_strategy(StrategyConfig(params={"known_class_prior": "max_logit"}))
