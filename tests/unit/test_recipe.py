"""The recipe's pure parts: temperature scaling, ECE, folds, per-round diagnostics."""

import json

import numpy as np
import pytest

from activelearn.learner.metrics import expected_calibration_error, per_class_accuracy
from activelearn.learner.recipe import fit_temperature, folds, with_temperature
from activelearn.tracking.diagnostics import flipped, round_diagnostics
from tests.helpers import compose_config


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident(n=2000, classes=5, seed=0):
    """Planted: labels drawn from softmax(z), predictions from softmax(4 z): a model about
    as accurate as it is, four times too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    truth = softmax(logits)
    y = np.array([rng.choice(classes, p=p) for p in truth])
    return softmax(4 * logits).astype(np.float32), y


def test_temperature_keeps_every_argmax_and_sums_to_one():
    probas, _ = overconfident(200)
    for t in (0.3, 1.0, 2.5, 19.0):
        scaled = with_temperature(probas, t)
        assert (scaled.argmax(axis=1) == probas.argmax(axis=1)).all()
        assert np.allclose(scaled.sum(axis=1), 1, atol=1e-5)
    assert with_temperature(probas, 1.0) is probas  # nothing to do
    mc = np.stack([probas, probas[::-1]], axis=-1)  # MC samples: [n, classes, T]
    assert (with_temperature(mc, 2.0).argmax(axis=1) == mc.argmax(axis=1)).all()


def test_fitted_temperature_lowers_ece_of_an_overconfident_model():
    probas, y = overconfident()
    fit_half, check_half = slice(0, 1000), slice(1000, None)  # fitted on one, checked on other
    t = fit_temperature(probas[fit_half], y[fit_half])
    assert t == pytest.approx(4.0, rel=0.25)  # the planted factor
    before = expected_calibration_error(probas[check_half], y[check_half])
    after = expected_calibration_error(with_temperature(probas[check_half], t), y[check_half])
    assert before > 0.1 and after < before / 3


def test_ece_of_known_cases():
    y = np.array([0, 0, 1, 1])
    sure_right = np.eye(2)[y].astype(np.float32)
    assert expected_calibration_error(sure_right, y) == 0.0
    # 0.8 sure each time, right 2 of 4: gap 0.3
    probas = np.array([[0.8, 0.2], [0.2, 0.8], [0.2, 0.8], [0.8, 0.2]])
    assert expected_calibration_error(probas, y) == pytest.approx(0.3)
    assert per_class_accuracy(y, probas.argmax(axis=1), ["a", "b", "c"]) == {"a": 0.5, "b": 0.5}


def test_folds_hold_out_every_image_once_stratified_when_they_can():
    y = np.repeat(np.arange(4), 3)
    held = folds(y, 3, seed=0)
    assert sorted(np.concatenate(held).tolist()) == list(range(12))
    assert all(sorted(y[h].tolist()) == [0, 1, 2, 3] for h in held)  # one of each class
    single = np.array([0, 1, 1, 1])  # class 0 has one image: plain k-fold
    assert sorted(np.concatenate(folds(single, 2, seed=0)).tolist()) == [0, 1, 2, 3]


def test_round_diagnostics_report_the_drop_flips_and_per_class_accuracy(tmp_path):
    before, now = tmp_path / "rounds/1", tmp_path / "rounds/2"
    before.mkdir(parents=True), now.mkdir(parents=True)
    (before / "test_predictions.json").write_text(
        json.dumps({"a.png": [0, 0], "b.png": [1, 1], "c.png": [1, 0]})
    )
    (now / "test_predictions.json").write_text(
        json.dumps({"a.png": [0, 1], "b.png": [1, 1], "c.png": [1, 1]})
    )
    test = {"accuracy": 2 / 3, "ece": 0.05, "ece_uncalibrated": 0.12, "temperature": 1.5}
    metrics = round_diagnostics(now, before, test, {"accuracy": 2 / 3 + 0.1}, ["x", "y"])
    assert metrics["accuracy_drop"] == pytest.approx(0.1)
    assert metrics["flipped_to_wrong"] == 1 and metrics["flipped_to_right"] == 1
    assert metrics["class_accuracy_x"] == 0.0 and metrics["class_accuracy_y"] == 1.0
    assert metrics["test_ece"] == 0.05 and metrics["test_ece_uncalibrated"] == 0.12
    flips = json.loads((now / "flipped.json").read_text())
    assert flips == flipped(
        json.loads((before / "test_predictions.json").read_text()),
        json.loads((now / "test_predictions.json").read_text()),
        ["x", "y"],
    )
    assert flips[0] == {
        "file": "a.png",
        "actual": "x",
        "before": "x",
        "after": "y",
        "now_right": False,
    }
    first = round_diagnostics(before, None, test, None, ["x", "y"])  # no round before
    assert "accuracy_drop" not in first and "flipped_to_wrong" not in first


def test_recipe_settings_compose_and_default_to_todays_recipe():
    cfg = compose_config(["model.augment.enabled=true", "model.ema=0.99"])
    assert cfg.model.augment.enabled and cfg.model.ema == 0.99
    assert cfg.model.augment.flip is False  # digits: no flips unless asked
    with pytest.raises(Exception, match="augment"):
        compose_config(["model.augment.flips=true"])  # a typo fails when composed


def test_weight_average_spans_at_most_the_last_third_of_a_fit():
    from activelearn.config import ModelConfig
    from activelearn.learner.recipe import optimizer

    cfg = ModelConfig(ema=0.99)
    assert optimizer(cfg, 1e-3, 300).ema_momentum == pytest.approx(0.99)  # the recipe's
    assert optimizer(cfg, 1e-3, 40).ema_momentum == pytest.approx(1 - 3 / 40)  # a test's
    assert not optimizer(ModelConfig(), 1e-3, 300).use_ema
