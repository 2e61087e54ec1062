"""The streaming scorer on a generated pool with broken files, and cheap MC dropout."""

import csv
import json

import numpy as np
import pytest

from activelearn.config import StrategyConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled
from activelearn.learner.classifier import Classifier
from activelearn.scoring.select import score_and_select
from activelearn.scoring.stream import stream_pool
from activelearn.strategies import MeanConfidence
from activelearn.strategies.registry import StrategyError, check_strategy
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import read_queue
from tests.helpers import write_class_folders

PREP = Preprocessing((12, 12), 1)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from activelearn.config import ModelConfig

    root = tmp_path_factory.mktemp("train")
    write_class_folders(root, per_class=10)
    names = class_names_of(root)
    data = load_labeled(root, names, PREP)
    cfg = ModelConfig(filters=[8], dense_units=16, dropout=0.3, min_steps=40, min_epochs=2)
    model = Classifier.build(names, PREP, cfg, seed=0)
    model.fit(data.x, data.y, cfg, seed=0)
    return model, data.x


@pytest.fixture
def pool(tmp_path):
    pool_dir = tmp_path / "pool"
    write_class_folders(pool_dir, per_class=20, seed=5)
    (pool_dir / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.sync_pool(pool_dir, Preprocessing((4, 4), 1))  # broken.png: rejected here
    manifest.set_state("class0/broken.png", "pool")  # pretend it went bad after the scan
    manifest.set_state("class1/s5-000.png", "labeled", round=0, label="class1")
    manifest.set_state("class1/s5-001.png", "queued", round=0)
    manifest.set_state("class2/s5-000.png", "rejected", reason="earlier")
    return pool_dir, manifest


def read_scores(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_entropy_queue_is_the_most_uncertain_and_skips_what_is_taken(tmp_path, classifier, pool):
    model, labeled_x = classifier
    pool_dir, manifest = pool
    result = score_and_select(
        model,
        manifest,
        pool_dir,
        StrategyConfig(name="entropy", batch_size=7),
        tmp_path / "rounds" / "1",
        labeled_x=labeled_x,
        prep=PREP,
        seed=0,
        batch_size=8,
    )
    queue = read_queue(tmp_path / "rounds" / "1" / "queue.jsonl")
    assert [q.sample_id for q in queue] == [q.sample_id for q in result.queue]
    assert [q.rank for q in queue] == list(range(1, 8))

    rows = read_scores(tmp_path / "rounds" / "1" / "scores.csv")
    ids = {r["sample_id"] for r in rows}
    assert len(rows) == 60 - 3  # labeled, queued and rejected samples are not scored
    assert not ids & {"class1/s5-000.png", "class1/s5-001.png", "class2/s5-000.png"}
    assert "class0/broken.png" not in ids
    assert manifest.samples["class0/broken.png"].state == "rejected"
    assert "broken.png" in manifest.samples["class0/broken.png"].reason

    by_entropy = sorted(rows, key=lambda r: -float(r["entropy"]))
    top = {r["sample_id"] for r in by_entropy[:7]}
    assert {q.sample_id for q in queue} == top
    assert all(q.predicted in model.class_names and 0 < q.confidence <= 1 for q in queue)
    by_id = {r["sample_id"]: r for r in rows}
    for q in queue:  # each queued sample carries its row of scores.csv
        assert set(q.scores) == {"least_confidence", "margin", "entropy"}
        assert q.scores["entropy"] == pytest.approx(q.score)
        for measure, value in q.scores.items():
            assert value == pytest.approx(float(by_id[q.sample_id][measure]), abs=1e-6)
    summary = json.loads((tmp_path / "rounds" / "1" / "queue_summary.json").read_text())
    assert sum(summary["class_mix"].values()) == 7 and summary["unreadable"] == 1


class GivesNaNFor:
    """The real model, except that it gives NaN for one image's input: a stand-in for an
    overflow that a trained model cannot be made to produce on demand."""

    def __init__(self, model, image: np.ndarray):
        self.model, self.image = model, image
        self.class_names, self.prep = model.class_names, model.prep

    def predict_with_features(self, x, mc_samples=0, seed=None):
        probas, features = self.model.predict_with_features(x, mc_samples, seed)
        probas[(x == self.image).all(axis=(1, 2, 3))] = np.nan
        return probas, features

    def logits_from_features(self, features):
        return self.model.logits_from_features(features)


def test_a_sample_the_model_gives_nan_for_is_queued_last_without_a_prediction(
    tmp_path, classifier, pool
):
    from activelearn.data.images import preprocess

    model, labeled_x = classifier
    pool_dir, manifest = pool
    manifest.set_state("class0/broken.png", "rejected", reason="broken")
    nan_id = "class0/s5-003.png"
    result = score_and_select(
        GivesNaNFor(model, preprocess(pool_dir / nan_id, PREP)),
        manifest,
        pool_dir,
        StrategyConfig(name="margin", batch_size=100),
        tmp_path,
        labeled_x=labeled_x,
        prep=PREP,
        seed=0,
    )
    last = result.queue[-1]
    assert (last.sample_id, last.predicted, last.confidence) == (nan_id, None, None)
    assert all(q.predicted and q.confidence for q in result.queue[:-1])
    for line in (tmp_path / "queue.jsonl").read_text().splitlines():  # strict JSON: no NaN
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in queue.jsonl"))
    row = next(r for r in read_scores(tmp_path / "scores.csv") if r["sample_id"] == nan_id)
    assert (row["predicted"], row["confidence"], row["margin"]) == ("", "", "-1.000000")


@pytest.mark.parametrize("name", ["ranked_batch", "cluster_margin", "hybrid", "typiclust"])
def test_diversity_strategies_queue_distinct_pool_samples(tmp_path, classifier, pool, name):
    model, labeled_x = classifier
    pool_dir, manifest = pool
    result = score_and_select(
        model,
        manifest,
        pool_dir,
        StrategyConfig(name=name, batch_size=6, candidates=20),
        tmp_path / "r",
        labeled_x=labeled_x,
        prep=PREP,
        seed=1,
        batch_size=16,
    )
    picked = [q.sample_id for q in result.queue]
    assert len(picked) == 6 == len(set(picked))
    assert set(picked) <= set(manifest.in_state("pool"))


def test_strategy_settings_that_cannot_work_fail_before_any_scoring():
    with pytest.raises(StrategyError, match="hybrid has no parameter alfa; it accepts .*typical"):
        check_strategy(StrategyConfig(name="hybrid", params={"alfa": 0.5}))
    with pytest.raises(StrategyError, match="strategy.name='entropyy' is not a strategy"):
        check_strategy(StrategyConfig(name="entropyy"))
    for one_pass in (0, 1):  # one sample has no variation to measure
        with pytest.raises(StrategyError, match="set strategy.mc_samples=20"):
            check_strategy(StrategyConfig(name="bald", mc_samples=one_pass))
    with pytest.raises(StrategyError, match="strategy.batch_size=0: must be at least 1"):
        check_strategy(StrategyConfig(batch_size=0))
    with pytest.raises(StrategyError, match="strategy.candidates=-5: must be at least 0"):
        check_strategy(StrategyConfig(candidates=-5))
    # parameter values, not only names: the selector itself judges them on planted samples
    with pytest.raises(StrategyError, match=r"strategy.params: .*alpha must be in \[0, 1\]"):
        check_strategy(StrategyConfig(name="ranked_batch", params={"alpha": 2.0}))
    with pytest.raises(StrategyError, match="strategy.params: .*'metric' parameter"):
        check_strategy(StrategyConfig(name="ranked_batch", params={"metric": "euclidian"}))
    with pytest.raises(StrategyError, match="strategy.params: "):
        check_strategy(StrategyConfig(name="hybrid", params={"max_clusters": "many"}))
    check_strategy(StrategyConfig(name="ranked_batch", params={"alpha": 0.5}))
    check_strategy(StrategyConfig(name="bald", mc_samples=5, params={}))


def test_strategy_params_reach_the_selector_but_not_the_cold_starts(
    tmp_path, classifier, pool, monkeypatch
):
    from activelearn import strategies

    seen = []
    select_batch = strategies.select_batch

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return select_batch(*args, **kwargs)

    monkeypatch.setattr(strategies, "select_batch", spy)
    model, labeled_x = classifier
    pool_dir, manifest = pool
    cfg = StrategyConfig(
        name="hybrid",
        batch_size=4,
        candidates=5,
        cold_start="typiclust",
        params={"typical_per_class": 0},
    )
    common = dict(prep=PREP, seed=0, batch_size=8)
    score_and_select(model, manifest, pool_dir, cfg, tmp_path / "r1", labeled_x=labeled_x, **common)
    assert seen[-1]["typical_per_class"] == 0
    # A cold start selects with typiclust, which has no such parameter: not passed.
    cold = score_and_select(
        None, manifest, pool_dir, cfg, tmp_path / "r0", labeled_x=None, **common
    )
    assert "typical_per_class" not in seen[-1] and len(cold.queue) == 4


def test_the_candidates_logits_reach_the_hybrids_max_logit_prior(
    tmp_path, classifier, pool, monkeypatch
):
    from activelearn import strategies

    seen = []
    select_batch = strategies.select_batch

    def spy(*args, **kwargs):
        seen.append((args[1], kwargs))
        return select_batch(*args, **kwargs)

    monkeypatch.setattr(strategies, "select_batch", spy)
    model, labeled_x = classifier
    pool_dir, manifest = pool
    cfg = StrategyConfig(
        name="hybrid", batch_size=4, candidates=20, params={"known_class_prior": "max_logit"}
    )
    result = score_and_select(
        model, manifest, pool_dir, cfg, tmp_path / "r", labeled_x=labeled_x, prep=PREP, seed=0
    )
    probas, kwargs = seen[-1]
    logits = kwargs["logits"]
    assert kwargs["known_class_prior"] == "max_logit" and len(result.queue) == 4
    assert logits.shape == probas.shape and len(logits) >= 20  # one row per candidate
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probas, atol=1e-5)


def test_hybrid_weighs_its_mix_by_the_whole_pools_confidence(
    tmp_path, classifier, pool, monkeypatch
):
    """The candidate set holds the least confident samples; the hybrid's share must come
    from every scored sample instead."""
    from activelearn import strategies

    seen = []
    select_batch = strategies.select_batch

    def spy(*args, **kwargs):
        seen.append(kwargs["pool_confidence"])
        return select_batch(*args, **kwargs)

    monkeypatch.setattr(strategies, "select_batch", spy)
    model, labeled_x = classifier
    pool_dir, manifest = pool
    score_and_select(
        model,
        manifest,
        pool_dir,
        StrategyConfig(name="hybrid", batch_size=4, candidates=5),
        tmp_path / "r",
        labeled_x=labeled_x,
        prep=PREP,
        seed=0,
        batch_size=8,
    )
    every = [float(r["confidence"]) for r in read_scores(tmp_path / "r" / "scores.csv")]
    assert len(every) == 57 and seen == [pytest.approx(np.mean(every), abs=1e-5)]
    summary = json.loads((tmp_path / "r" / "queue_summary.json").read_text())
    assert summary["pool_confidence"] == seen[0]


def test_mean_confidence_is_the_same_however_the_pool_is_cut():
    values = np.random.default_rng(0).random(10_000).astype(np.float32)
    means = []
    for size in (7, 256, 10_000):
        mean = MeanConfidence()
        for start in range(0, len(values), size):
            mean.add(values[start : start + size])
        means.append(mean.value)
    assert means[0] == means[1] == means[2] == pytest.approx(values.mean(dtype=np.float64))
    assert MeanConfidence().value is None
    with_nan = MeanConfidence()
    with_nan.add(np.array([0.5, np.nan, 1.0, np.inf], dtype=np.float32))
    assert with_nan.value == 0.75


@pytest.mark.parametrize("cold_start", ["random", "kcenter"])
def test_cold_start_without_a_model(tmp_path, pool, cold_start):
    pool_dir, manifest = pool
    cfg = StrategyConfig(batch_size=5, cold_start=cold_start)
    picks = [
        [
            q.sample_id
            for q in score_and_select(
                None,
                manifest,
                pool_dir,
                cfg,
                tmp_path / f"r{seed}",
                labeled_x=None,
                prep=PREP,
                seed=seed,
            ).queue
        ]
        for seed in (0, 0, 1)
    ]
    assert len(picks[0]) == 5 and picks[0] == picks[1]  # seeded
    if cold_start == "random":
        assert picks[0] != picks[2]
    else:  # k-center on pixels spreads the batch over the three pattern classes
        assert {sid.split("/")[0] for sid in picks[0]} == {"class0", "class1", "class2"}
    assert all(
        q is None
        for q in [
            json.loads(line)["predicted"]
            for line in (tmp_path / "r0" / "queue.jsonl").read_text().splitlines()
        ]
    )


def test_mc_strategy_without_samples_is_a_clear_error(tmp_path, classifier, pool):
    model, labeled_x = classifier
    with pytest.raises(ValueError, match="mc_samples"):
        score_and_select(
            model,
            pool[1],
            pool[0],
            StrategyConfig(name="bald"),
            tmp_path,
            labeled_x=labeled_x,
            prep=PREP,
            seed=0,
        )


def test_bald_with_mc_samples_scores_every_sample_the_same_each_time(tmp_path, classifier, pool):
    model, labeled_x = classifier
    results = [
        score_and_select(
            model,
            Manifest(pool[1].path, dict(pool[1].samples)),  # each run from the same state
            pool[0],
            StrategyConfig(name="bald", mc_samples=5, batch_size=4),
            tmp_path / str(run),
            labeled_x=labeled_x,
            prep=PREP,
            seed=0,
            batch_size=batch_size,
        )
        for run, batch_size in enumerate([16, 16, 8])
    ]
    rows = read_scores(tmp_path / "0" / "scores.csv")
    assert {"bald", "variation_ratio"} <= set(rows[0])
    top = {r["sample_id"] for r in sorted(rows, key=lambda r: -float(r["bald"]))[:4]}
    assert {q.sample_id for q in results[0].queue} == top
    # Dropout masks are seeded per batch: a rerun picks and scores alike, other batches not.
    same, other = ((tmp_path / str(r) / "scores.csv").read_text() for r in (1, 2))
    assert same == (tmp_path / "0" / "scores.csv").read_text() != other
    assert results[1].queue == results[0].queue


def test_cheap_mc_dropout_matches_full_passes_in_distribution(classifier):
    model, x = classifier
    cheap, _ = model.predict_with_features(x, mc_samples=300)
    full = np.stack([np.asarray(model.network(x, training=True)) for _ in range(300)], axis=-1)
    assert cheap.shape == full.shape == (len(x), 3, 300)
    assert np.abs(cheap.mean(-1) - full.mean(-1)).mean() < 0.02
    assert np.abs(cheap.std(-1).mean() - full.std(-1).mean()) < 0.02
    assert cheap.std(-1).mean() > 0.001  # really stochastic
    deterministic, _ = model.predict_with_features(x)
    assert np.allclose(deterministic, model.predict_proba(x), atol=1e-5)


def test_stream_pool_keeps_order_and_reports_unreadable(tmp_path):
    write_class_folders(tmp_path, per_class=5, n_classes=1)
    (tmp_path / "class0" / "bad.png").write_bytes(b"")
    ids = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    batches = list(stream_pool(ids, tmp_path, PREP, batch_size=2, workers=2))
    assert [i for b in batches for i in b.ids] == [i for i in ids if "bad" not in i]
    assert [sid for b in batches for sid, _ in b.unreadable] == ["class0/bad.png"]
