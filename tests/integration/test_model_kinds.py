"""The three model kinds (cnn, backbone, custom) through a whole round, tiny: train,
score the pool, select, export, import, serve, the same predictions everywhere; the
feature cache of a frozen backbone.

No network here: no ImageNet download is ever attempted. Backbones are built from a
weights file this module saves first: random weights whose batch-norm statistics are
set from one batch of images (a randomly initialised keras.applications network gives
features of about 1e-10, which would make every prediction uniform and every
comparison trivially equal); `weights: null` where only the cost matters.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from activelearn.config import ModelConfig, ModelKind, StrategyConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled, preprocess
from activelearn.errors import ConfigError
from activelearn.learner import classifier as classifier_module
from activelearn.learner.classifier import Classifier
from activelearn.scoring.select import score_and_select
from activelearn.workspace.features import FeatureCache
from activelearn.workspace.manifest import Manifest
from tests.helpers import LABEL_CONFIG, calibrated_weights, serving_client, write_class_folders

RGB = Preprocessing((32, 32), 3)
RECIPE = dict(batch_size=8, min_steps=20, min_epochs=1, dense_units=8, dropout=0.2)
KINDS = {
    "cnn": ModelConfig(filters=[4], **RECIPE),
    "backbone": ModelConfig(kind=ModelKind.backbone, weights=None, **RECIPE),
    "custom": ModelConfig(
        kind=ModelKind.custom,
        _target_="tests.models.tiny.build_model",
        params={"width": 6},
        features_layer="embedding",
        **RECIPE,
    ),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    write_class_folders(root / "train", per_class=4, seed=0)
    write_class_folders(root / "pool", per_class=3, seed=5)
    names = class_names_of(root / "train")
    cfg = KINDS["backbone"]
    weights = calibrated_weights(root, load_labeled(root / "train", names, prep_of(cfg)).x, cfg)
    KINDS["backbone"] = replace(cfg, weights=weights)
    return root, names, load_labeled(root / "train", names, RGB)


def prep_of(cfg: ModelConfig) -> Preprocessing:
    return Preprocessing((32, 32), 3, "raw" if cfg.kind == "backbone" else "unit")


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_goes_through_a_round_and_serves_what_it_scored(
    kind, images, tmp_path, monkeypatch
):
    root, names, _ = images
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    cfg = KINDS[kind]
    prep = prep_of(cfg)
    train = load_labeled(root / "train", names, prep)
    model = Classifier.build(names, prep, cfg, seed=0, version="round-1")
    model.fit(train.x, train.y, cfg, seed=0)

    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.sync_pool(root / "pool", prep)
    result = score_and_select(
        model,
        manifest,
        root / "pool",
        StrategyConfig(name="hybrid", batch_size=3, candidates=9),  # uses features
        tmp_path / "round",
        labeled_x=train.x,
        prep=prep,
        seed=0,
        feature_cache=tmp_path / "cache",
        labeled_files=train.files,
    )
    assert len(result.queue) == 3 and result.summary["scored"] == 9
    if kind == "backbone":
        assert len(FeatureCache(tmp_path / "cache", model.backbone_key())) == 9 + 12
    else:
        assert not (tmp_path / "cache").exists()  # only a frozen backbone is cached

    path = tmp_path / "model" / "classifier.bentomodel"
    model.save(path)
    classifier_module._IN_MEMORY.clear()  # read the file back, as another process would
    loaded = Classifier.load(path)
    assert loaded is not model and loaded.prep == prep
    assert loaded.features_layer == model.features_layer
    pool_files = sorted((root / "pool").rglob("*.png"))
    x = np.stack([preprocess(f, prep) for f in pool_files])
    expected = model.predict_proba(x)
    assert expected.std(axis=0).max() > 1e-3  # not one answer for every image
    np.testing.assert_allclose(loaded.predict_proba(x), expected, atol=1e-6)
    queued = {item.sample_id: item for item in result.queue}
    for sid, item in queued.items():  # the queue's predictions are the model's
        probas = model.predict_proba(preprocess(root / "pool" / sid, prep)[None])[0]
        assert item.predicted == names[int(probas.argmax())]
        assert item.confidence == pytest.approx(float(probas.max()), abs=1e-5)

    with serving_client(path, root, tmp_path) as client:
        tasks = [
            {"id": i + 1, "data": {"picture": f"/data/local-files/?d={f.relative_to(root)}"}}
            for i, f in enumerate(pool_files)
        ]
        body = client.post(
            "/predict", json={"tasks": tasks, "project": "1.1", "label_config": LABEL_CONFIG}
        ).json()
    for answer, probas in zip(body["results"], expected, strict=True):
        assert answer["result"][0]["value"]["choices"] == [names[int(probas.argmax())]]
        assert answer["score"] == pytest.approx(float(probas.max()), abs=1e-5)


def test_backbone_from_a_local_weights_file_is_those_weights(tmp_path, images):
    """The weights file is saved here first from a random backbone: no download."""
    from activelearn.learner.networks import backbone

    cfg = replace(KINDS["backbone"], weights=None)
    prep = prep_of(cfg)
    source = backbone(prep, cfg)
    source.save_weights(tmp_path / "mobilenet.weights.h5")

    from_file = Classifier.build(
        ["a", "b"], prep, replace(cfg, weights=str(tmp_path / "mobilenet.weights.h5")), seed=7
    )
    random_other = Classifier.build(["a", "b"], prep, cfg, seed=7)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        from_file.backbone_features(x), source(x, training=False).numpy(), atol=1e-5
    )
    assert from_file.backbone_key() != random_other.backbone_key()
    with pytest.raises(ConfigError, match="no such file"):
        Classifier.build(["a"], prep, replace(cfg, weights=str(tmp_path / "none.h5")), seed=0)


def test_feature_cache_hits_misses_a_changed_file_and_is_rebuilt_when_removed(
    tmp_path, images, monkeypatch
):
    root, names, _ = images
    cfg = KINDS["backbone"]
    prep = prep_of(cfg)
    model = Classifier.build(names, prep, cfg, seed=0)
    pool = tmp_path / "pool"
    write_class_folders(pool, per_class=2, seed=3)
    manifest = Manifest(tmp_path / "manifest.csv")
    manifest.sync_pool(pool, prep)
    computed = []
    real = Classifier.backbone_features

    def counting(self, x, batch_size=64):
        computed.append(len(x))
        return real(self, x, batch_size)

    monkeypatch.setattr(Classifier, "backbone_features", counting)

    def scores(strategy="entropy"):
        score_and_select(
            model,
            manifest,
            pool,
            StrategyConfig(name=strategy, batch_size=2),
            tmp_path / "round",
            labeled_x=None,
            prep=prep,
            seed=0,
            feature_cache=tmp_path / "cache",
        )
        return (tmp_path / "round" / "scores.csv").read_text()

    first = scores()
    assert sum(computed) == 6  # a miss for each file
    computed.clear()
    assert scores() == first.replace("\r", "") or scores() == first  # hit: same scores
    assert sum(computed) == 0
    changed = pool / "class0" / "s3-000.png"
    write_class_folders(tmp_path / "other", per_class=1, seed=9)
    changed.write_bytes((tmp_path / "other" / "class2" / "s9-000.png").read_bytes())
    scores()
    assert sum(computed) == 1  # only the changed file, by its content
    computed.clear()
    import shutil

    shutil.rmtree(tmp_path / "cache")
    rebuilt = scores()
    assert sum(computed) == 6 and (tmp_path / "cache").is_dir()
    computed.clear()
    assert scores() == rebuilt and sum(computed) == 0

    other = Classifier.build(names, prep, replace(cfg, weights=None), seed=1)  # other weights
    assert other.backbone_key() != model.backbone_key()
    model = other
    scores()
    assert sum(computed) == 6  # nothing read from the first backbone's features


def test_cached_and_uncached_scoring_agree(tmp_path, images):
    root, names, _ = images
    cfg = KINDS["backbone"]
    prep = prep_of(cfg)
    model = Classifier.build(names, prep, cfg, seed=0)
    x = np.stack([preprocess(f, prep) for f in sorted((root / "pool").rglob("*.png"))])
    direct, features = model.predict_with_features(x)
    via_cache, cached = model.predict_from_features(model.backbone_features(x))
    np.testing.assert_allclose(direct, via_cache, atol=1e-6)
    np.testing.assert_allclose(features, cached, atol=1e-6)
    assert features.shape == (len(x), RECIPE["dense_units"])  # the head's features layer
    assert direct.std(axis=0).max() > 1e-3  # the images get different predictions


def test_custom_model_without_dropout_says_so_for_mc_dropout(images):
    _, names, _ = images
    model = Classifier.build(names, RGB, KINDS["custom"], seed=0)
    x = np.zeros((2, 32, 32, 3), np.float32)
    probas, features = model.predict_with_features(x)
    assert probas.shape == (2, 3) and features.shape == (2, 6)  # the named layer
    with pytest.raises(ValueError, match="no dropout layer.*mc_samples=0"):
        model.predict_with_features(x, mc_samples=3, seed=0)

    dropout = replace(
        KINDS["custom"], _target_="tests.models.tiny.build_with_dropout", features_layer=None
    )
    model = Classifier.build(names, RGB, dropout, seed=0)
    probas, features = model.predict_with_features(x, mc_samples=4, seed=0)
    assert probas.shape == (2, 3, 4) and features.shape == (2, 6)  # penultimate: the dropout


def test_no_logits_when_the_softmax_does_not_read_the_features_layer(images):
    _, names, _ = images
    model = Classifier.build(names, RGB, KINDS["custom"], seed=0)
    flatten = next(layer.name for layer in model.network.layers if "flatten" in layer.name)
    earlier = Classifier(model.network, names, RGB, "v", features_layer=flatten)
    features = earlier.predict_with_features(np.zeros((2, 32, 32, 3), np.float32))[1]
    assert earlier.logits_from_features(features) is None
    assert model.logits_from_features(np.zeros((2, 6))).shape == (2, 3)


def test_custom_model_errors_name_the_setting(images):
    _, names, _ = images
    base = KINDS["custom"]
    for target, message in [
        ("tests.models.tiny.not_a_model", "not a Keras model"),
        ("tests.models.nowhere.build", "could not build"),
        (None, "needs model._target_"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Classifier.build(names, RGB, replace(base, _target_=target, params={}), seed=0)
    with pytest.raises(ConfigError, match="features_layer=nope"):
        Classifier.build(names, RGB, replace(base, features_layer="nope"), seed=0)


def test_cli_rounds_with_a_backbone_cache_features_outside_git(tmp_path):
    """`python -m activelearn model=backbone` twice (random weights: no download): the
    second round reads the features the first computed, and git never sees the cache."""
    import subprocess

    from tests.helpers import make_workspace, run_cli_round

    ws = tmp_path / "ws"
    make_workspace(ws)
    backbone = ["model=backbone", "model.weights=null", "model.image_size=[32,32]"]
    cache = ws / ".cache" / "features"
    assert run_cli_round(ws, 0, None, *backbone) == 0
    # Each round builds the backbone from the same seed: the same weights, the same key.
    (key,) = [p for p in cache.iterdir() if p.is_dir()]
    shards = sorted(key.glob("*.npz"))
    assert len(shards) >= 2  # the labeled set (train), then the pool (select)
    assert run_cli_round(ws, 1, None, *backbone) == 0
    assert sorted(key.glob("*.npz")) == shards  # round 1 computed nothing new: all cached
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored"], cwd=ws, capture_output=True, text=True
    ).stdout
    assert "!! .cache/" in status  # ignored, never committed
    meta = Classifier.load(ws / "model" / "classifier.bentomodel")
    assert meta.prep == Preprocessing((32, 32), 3, "raw") and meta.backbone is not None


def test_cli_round_with_a_custom_model_from_the_command_line(tmp_path):
    from tests.helpers import make_workspace, run_cli_round

    ws = tmp_path / "ws"
    make_workspace(ws)
    custom = [
        "model=custom",
        "model._target_=tests.models.tiny.build_model",
        "+model.params.width=5",
    ]
    assert run_cli_round(ws, 0, None, *custom) == 0
    model = Classifier.load(ws / "model" / "classifier.bentomodel")
    assert model.network.name == "tiny_custom" and model.features_layer != "features"


def test_backbone_mc_dropout_samples_the_head_and_finetuning_moves_the_backbone(images):
    root, names, _ = images
    cfg = replace(KINDS["backbone"], finetune_layers=2, min_steps=4)
    prep = prep_of(cfg)
    train = load_labeled(root / "train", names, prep)
    model = Classifier.build(names, prep, cfg, seed=0)
    probas, features = model.predict_with_features(train.x[:3], mc_samples=4, seed=1)
    assert probas.shape == (3, 3, 4) and not np.allclose(probas[..., 0], probas[..., 1])
    again, _ = model.predict_with_features(train.x[:3], mc_samples=4, seed=1)
    np.testing.assert_array_equal(probas, again)  # seeded masks

    before = model.backbone_key()
    model.fit(train.x, train.y, cfg, seed=0)
    assert model.backbone_key() != before  # its top layers trained: other features
    assert not model.backbone.trainable  # frozen again for scoring and saving


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_trains_with_the_whole_recipe_and_reloads_the_same(
    kind, tmp_path, images, bentoml_home
):
    """Augmentation (not applied to a backbone's head on cached features), EMA, balanced
    batches, warm start and out-of-fold calibration (heads on features for a backbone)."""
    from activelearn.config import AugmentConfig
    from activelearn.learner import classifier as model_module

    root, names, _ = images
    cfg = replace(
        KINDS[kind],
        augment=AugmentConfig(enabled=True),
        ema=0.9,
        class_balanced=True,
        warm_start=True,
        calibration_folds=2,
    )
    prep = prep_of(cfg)
    train = load_labeled(root / "train", names, prep)
    last = Classifier.build(names, prep, cfg, seed=0)
    last.fit(train.x, train.y, cfg, seed=0)
    classifier = Classifier.build(names, prep, cfg, seed=1, version="round-1")
    classifier.fit(train.x, train.y, cfg, seed=1, warm_from=last.network.get_weights())
    assert classifier.temperature != 1.0
    x = np.stack([preprocess(f, prep) for f in sorted((root / "pool").rglob("*.png"))])
    expected = classifier.predict_proba(x)
    probas, features = classifier.predict_with_features(x)
    logits = classifier.logits_from_features(features)  # the open-set prior's input
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probas, atol=1e-5)
    classifier.save(tmp_path / "model.bentomodel")
    model_module._IN_MEMORY.clear()
    loaded = Classifier.load(tmp_path / "model.bentomodel")
    np.testing.assert_allclose(loaded.predict_proba(x), expected, atol=1e-6)
    assert loaded.temperature == pytest.approx(classifier.temperature)
