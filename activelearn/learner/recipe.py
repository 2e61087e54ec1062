"""The training recipe's options (`model.augment`, `model.ema`, `model.class_balanced`,
`model.warm_start`, `model.calibration_folds`): the training stream, and the softmax
temperature fitted on out-of-fold predictions of the labeled set.

Augmentation lives in the training stream, never in the network: the saved model, and so
scoring, evaluation and serving, see the image as it is.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from activelearn.config import AugmentConfig, ModelConfig
from activelearn.data.images import Preprocessing

log = logging.getLogger(__name__)

# Pixel range of each scaling, for brightness and contrast changes; caffe's (a BGR mean
# subtracted) has no fixed range, so those two are left out there.
VALUE_RANGES = {"unit": (0.0, 1.0), "raw": (0.0, 255.0), "symmetric": (-1.0, 1.0)}
TEMPERATURE_BOUNDS = (0.05, 20.0)


def augmentation(cfg: AugmentConfig, prep: Preprocessing, seed: int):
    """The Keras preprocessing layers `cfg` asks for, as one model applied to training
    batches; None when augmentation is off or asks for nothing."""
    if not cfg.enabled:
        return None
    import keras
    from keras import layers

    steps, how = [], str(cfg.interpolation)
    if cfg.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation > 0:
        steps.append(
            layers.RandomRotation(
                cfg.rotation, fill_mode="nearest", interpolation=how, seed=seed + 1
            )
        )
    if cfg.zoom > 0:
        steps.append(
            layers.RandomZoom(cfg.zoom, fill_mode="nearest", interpolation=how, seed=seed + 2)
        )
    if cfg.translate > 0:
        steps.append(
            layers.RandomTranslation(
                cfg.translate, cfg.translate, fill_mode="nearest", interpolation=how, seed=seed + 3
            )
        )
    value_range = VALUE_RANGES.get(prep.scaling)
    if value_range is not None and cfg.contrast > 0:
        steps.append(layers.RandomContrast(cfg.contrast, value_range=value_range, seed=seed + 4))
    if value_range is not None and cfg.brightness > 0:
        steps.append(
            layers.RandomBrightness(cfg.brightness, value_range=value_range, seed=seed + 5)
        )
    if not steps:
        return None
    return keras.Sequential(steps, name="augmentation")


def training_stream(
    x: np.ndarray, y: np.ndarray, cfg: ModelConfig, seed: int, augment=None, weights=None
):
    """Shuffled, repeated batches of (x, y): drawn class by class evenly with
    `cfg.class_balanced`, each batch changed by `augment` (training only)."""
    import tensorflow as tf

    if cfg.class_balanced and len(np.unique(y)) > 1:
        classes = np.unique(y)
        parts = [
            tf.data.Dataset.from_tensor_slices((x[y == c], y[y == c]))
            .shuffle(int((y == c).sum()), seed=seed + int(c), reshuffle_each_iteration=True)
            .repeat()
            for c in classes
        ]
        stream = tf.data.Dataset.sample_from_datasets(
            parts, weights=[1 / len(classes)] * len(classes), seed=seed
        )
    else:
        stream = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .repeat()
        )
    stream = stream.batch(cfg.batch_size)
    if augment is not None:
        stream = stream.map(
            lambda images, labels: (augment(images, training=True), labels),
            num_parallel_calls=1,
        )
    return stream.prefetch(2)


def optimizer(cfg: ModelConfig, learning_rate: float, total_steps: int = 0):
    """Adam, keeping the exponential moving average of the weights with `cfg.ema` > 0
    (Keras swaps the average in at the end of fit). The average spans at most the last
    third of the run (momentum at most 1 - 3 / steps): a short fit (a test's 40 steps)
    is not averaged with its first, untrained steps. At the recipe's 300 steps, 0.99."""
    import keras

    if cfg.ema > 0:
        momentum = min(cfg.ema, 1 - 3 / total_steps) if total_steps > 3 else cfg.ema
        return keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=momentum)
    return keras.optimizers.Adam(learning_rate)


def folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Indices of `k` held-out folds of the labeled set, stratified when every class has
    `k` images, shuffled with `seed`."""
    from sklearn.model_selection import KFold, StratifiedKFold

    k = min(k, len(y))
    counts = np.bincount(y)
    if counts[counts > 0].min() >= k:
        split = StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)
    else:
        split = KFold(k, shuffle=True, random_state=seed).split(y)
    return [held for _, held in split]


def with_temperature(probas: np.ndarray, temperature: float, axis: int = 1) -> np.ndarray:
    """softmax(log(p) / T) along the class axis: the same as dividing the logits by T, so
    the argmax never changes; T > 1 softens, T < 1 sharpens, T = 1 changes nothing."""
    if temperature == 1.0:
        return probas
    logits = np.log(np.maximum(np.asarray(probas, np.float64), np.finfo(np.float64).tiny))
    logits = logits / temperature
    logits -= logits.max(axis=axis, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=axis, keepdims=True)).astype(np.float32)


def fit_temperature(probas: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of held-out predictions."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        scaled = with_temperature(probas, math.exp(log_t)).astype(np.float64)
        return float(-np.log(np.maximum(scaled[np.arange(len(y)), y], 1e-12)).mean())

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    found = minimize_scalar(nll, bounds=(low, high), method="bounded")
    return float(math.exp(found.x))
