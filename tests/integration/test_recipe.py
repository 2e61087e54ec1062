"""The training recipe's options on tiny generated data: augmentation stays in training,
the averaged, balanced, calibrated model saves, exports and serves the same predictions,
and warm start starts from the last round's weights."""

from dataclasses import replace

import numpy as np
import pytest

from activelearn.config import AugmentConfig
from activelearn.data.images import Preprocessing, class_names_of, load_labeled, preprocess
from activelearn.learner import classifier as model
from activelearn.learner.classifier import Classifier
from activelearn.learner.recipe import augmentation, training_stream
from tests.helpers import serving_client, write_class_folders

PREP = Preprocessing((12, 12), 1)
AUGMENT = AugmentConfig(enabled=True, translate=0.2, zoom=0.2, rotation=0.05, contrast=0.2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    write_class_folders(root / "train", per_class=12, seed=0)
    write_class_folders(root / "pool", per_class=4, seed=5)
    names = class_names_of(root / "train")
    return root, names, load_labeled(root / "train", names, PREP)


def all_layers(network):
    for layer in network.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def test_augmentation_changes_training_batches_and_never_reaches_the_model(
    data, tiny_model_cfg, bentoml_home
):
    root, names, train = data
    cfg = replace(tiny_model_cfg, augment=AUGMENT, batch_size=len(train.y))
    stream = training_stream(train.x, train.y, cfg, 0, augmentation(AUGMENT, PREP, 0))
    images, _ = next(iter(stream))
    nearest = [np.abs(train.x - image.numpy()).max(axis=(1, 2, 3)).min() for image in images]
    assert min(nearest) > 0.01  # no training image went through unchanged

    classifier = Classifier.build(names, PREP, cfg, seed=0, version="round-1")
    classifier.fit(train.x, train.y, cfg, seed=0)
    kinds = {type(layer).__name__ for layer in all_layers(classifier.network)}
    assert not any(kind.startswith("Random") for kind in kinds), kinds
    pool = load_labeled(root / "pool", names, PREP).x
    first = classifier.predict_proba(pool)
    assert np.array_equal(first, classifier.predict_proba(pool))  # scoring: no randomness
    probas, _ = classifier.predict_with_features(pool)
    assert np.allclose(probas, first, atol=1e-6)
    classifier.save(root / "augmented.bentomodel")
    model._IN_MEMORY.clear()  # read it back from the file
    loaded = Classifier.load(root / "augmented.bentomodel")
    kinds = {type(layer).__name__ for layer in all_layers(loaded.network)}
    assert not any(kind.startswith("Random") for kind in kinds), kinds
    assert np.allclose(loaded.predict_proba(pool), first, atol=1e-6)


def test_nearest_interpolation_moves_pixels_and_bilinear_blends_them():
    """Fine textures survive `interpolation: nearest`: every augmented value is one of the
    image's own; bilinear makes new in-between values (a blur)."""
    stripes = np.zeros((1, 12, 12, 1), np.float32)
    stripes[:, :, ::2] = 1.0  # a one-pixel period
    for how, kept in (("nearest", True), ("bilinear", False)):
        layers = augmentation(AugmentConfig(enabled=True, interpolation=how), PREP, seed=3)
        out = np.concatenate([np.asarray(layers(stripes, training=True)) for _ in range(5)])
        assert np.isin(out, [0.0, 1.0]).all() == kept, how


def test_averaged_balanced_calibrated_model_saves_exports_and_serves_the_same(
    data, tiny_model_cfg, bentoml_home
):
    root, names, train = data
    cfg = replace(
        tiny_model_cfg, augment=AUGMENT, ema=0.9, class_balanced=True, calibration_folds=2
    )
    classifier = Classifier.build(names, PREP, cfg, seed=0, version="round-2")
    classifier.fit(train.x, train.y, cfg, seed=0)
    assert classifier.temperature != 1.0  # fitted on out-of-fold predictions
    files = sorted((root / "pool").glob("class*/*.png"))
    x = np.stack([preprocess(f, PREP) for f in files])
    expected = classifier.predict_proba(x)
    raw = classifier.predict_proba(x, calibrated=False)
    assert (expected.argmax(axis=1) == raw.argmax(axis=1)).all()
    assert not np.allclose(expected, raw, atol=1e-3)  # the temperature is applied
    path = root / "model" / "classifier.bentomodel"
    classifier.save(path)
    model._IN_MEMORY.clear()
    loaded = Classifier.load(path)
    assert loaded.temperature == pytest.approx(classifier.temperature)
    assert np.allclose(loaded.predict_proba(x), expected, atol=1e-6)
    probas, _ = loaded.predict_with_features(x)  # what the pool scoring reads
    assert np.allclose(probas, expected, atol=1e-6)

    model._IN_MEMORY.clear()
    with serving_client(path, root, root) as client:
        tasks = [
            {"id": i + 1, "data": {"image": f"/data/local-files/?d={f.relative_to(root)}"}}
            for i, f in enumerate(files)
        ]
        body = client.post("/predict", json={"tasks": tasks}).json()
    scores = [r["score"] for r in body["results"]]
    assert scores == pytest.approx(expected.max(axis=1).tolist(), abs=1e-5)
    chosen = [r["result"][0]["value"]["choices"][0] for r in body["results"]]
    assert chosen == [names[i] for i in expected.argmax(axis=1)]


def test_warm_start_starts_from_the_last_rounds_weights(data, tiny_model_cfg):
    _, names, train = data
    cfg = replace(tiny_model_cfg, warm_start=True)
    last = Classifier.build(names, PREP, cfg, seed=0)
    last.fit(train.x, train.y, cfg, seed=0)
    scratch = Classifier.build(names, PREP, cfg, seed=1)
    scratch_history = scratch.fit(train.x, train.y, replace(cfg, warm_start=False), seed=1)
    warm = Classifier.build(names, PREP, cfg, seed=1)
    warm_history = warm.fit(train.x, train.y, cfg, seed=1, warm_from=last.network.get_weights())
    assert warm_history[0]["loss"] < scratch_history[0]["loss"]  # started where last ended
    other = Classifier.build([*names, "extra"], PREP, cfg, seed=1)
    assert not other.warm_start(last.network.get_weights())  # another class count: fresh


def test_the_train_stage_warm_starts_from_the_round_before(
    data, tiny_model_cfg, tmp_path, monkeypatch, bentoml_home
):
    import json

    from activelearn.config import Config, DataConfig
    from activelearn.pipeline import stages

    _, names, train = data
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prepared").mkdir()
    np.savez(tmp_path / "prepared/train.npz", x=train.x, y=train.y, files=np.array(train.files))
    (tmp_path / "prepared/classes.json").write_text(json.dumps(names))
    started_from = []
    real = Classifier.warm_start
    monkeypatch.setattr(
        Classifier, "warm_start", lambda self, w: started_from.append(w[0].copy()) or real(self, w)
    )
    cfg = Config(
        data=DataConfig(image_size=[12, 12], channels=1),
        model=replace(tiny_model_cfg, warm_start=True),
    )
    stages.train(replace(cfg, round=0))
    assert started_from == []  # nothing before round 0
    saved = np.load(tmp_path / ".cache/warm_start/round-0.npz")["arr_0"]
    stages.train(replace(cfg, round=1))
    stages.train(replace(cfg, round=1))  # a rerun of round 1: from round 0's weights again
    assert len(started_from) == 2
    assert all(np.array_equal(w, saved) for w in started_from)
