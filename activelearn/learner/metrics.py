"""Test-set metrics of a classifier's predictions."""

from __future__ import annotations

import math

import numpy as np

# Fewer test images of a class than this, and its accuracy moves by 10 points or more
# with one image: say so when the test set is read.
FEW_TEST_IMAGES = 10


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    # Averaged over the classes tested or predicted, as scikit-learn's own default: a
    # class with no test image that the model never predicts has no score to average.
    scored = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))

    def macro(scores: np.ndarray) -> float:
        return float(scores[scored].mean()) if scored else 0.0

    low, high = wilson_interval(int((np.asarray(y_true) == np.asarray(y_pred)).sum()), len(y_true))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "accuracy_low": low,  # the 95% interval of the accuracy (Wilson)
        "accuracy_high": high,
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% confidence interval (Wilson's score interval) of an accuracy of
    `correct` out of `n`: on a small test set, 1.0 and 0.667 can be the same model."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def expected_calibration_error(probas: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the gap between confidence and accuracy, averaged over
    `bins` equal-width confidence bins weighted by how many predictions fall in each."""
    probas, y_true = np.asarray(probas), np.asarray(y_true)
    if len(y_true) == 0:
        return 0.0
    confidence = probas.max(axis=1)
    correct = probas.argmax(axis=1) == y_true
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(gap)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """{class: share of its test images predicted right}, for the classes tested."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {
        name: float((y_pred[y_true == i] == i).mean())
        for i, name in enumerate(class_names)
        if (y_true == i).any()
    }
