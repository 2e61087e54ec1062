"""Per-round diagnostics of the test set: the drop against the last round and the test
images whose prediction flipped, each class's accuracy, and calibration. Reported only:
nothing is fitted on the test set."""

from __future__ import annotations

import json
from pathlib import Path

PREDICTIONS = "test_predictions.json"  # a round folder's: {file: [actual, predicted]}
FLIPPED = "flipped.json"  # a round folder's: the test images that changed prediction


def keep_predictions(report_file: Path, round_dir: Path) -> None:
    """Copy the evaluation's per-image test predictions into the round's folder, where the
    next round finds them (evaluation/ is rewritten every round)."""
    if not report_file.is_file():
        return
    predictions = json.loads(report_file.read_text()).get("test_predictions")
    if predictions is not None:
        round_dir.mkdir(parents=True, exist_ok=True)
        (round_dir / PREDICTIONS).write_text(json.dumps(predictions))


def flipped(previous: dict, current: dict, class_names: list[str]) -> list[dict]:
    """Test images predicted differently from the last round: file, truth, before, after."""
    name = {i: n for i, n in enumerate(class_names)}.get
    return [
        {
            "file": file,
            "actual": name(actual, str(actual)),
            "before": name(previous[file][1], str(previous[file][1])),
            "after": name(predicted, str(predicted)),
            "now_right": predicted == actual,
        }
        for file, (actual, predicted) in sorted(current.items())
        if file in previous and previous[file][1] != predicted
    ]


def round_diagnostics(
    round_dir: Path,
    previous_dir: Path | None,
    test: dict,
    previous_test: dict | None,
    class_names: list[str],
) -> dict[str, float]:
    """The round's diagnostic metrics; writes `flipped.json` in `round_dir` when the last
    round's predictions are there."""
    metrics: dict[str, float] = {}
    for key in ("ece", "ece_uncalibrated", "temperature"):
        if key in test:
            metrics[f"test_{key}" if key != "temperature" else key] = float(test[key])
    if previous_test and "accuracy" in previous_test:
        metrics["accuracy_drop"] = float(previous_test["accuracy"] - test["accuracy"])
    now = _read(round_dir / PREDICTIONS)
    before = _read(previous_dir / PREDICTIONS) if previous_dir else None
    if now is not None:
        for i, name in enumerate(class_names):
            tested = [p for a, p in now.values() if a == i]
            if tested:
                metrics[f"class_accuracy_{name}"] = sum(p == i for p in tested) / len(tested)
    if now is not None and before is not None:
        flips = flipped(before, now, class_names)
        (round_dir / FLIPPED).write_text(json.dumps(flips, indent=1))
        metrics["flipped_to_wrong"] = float(sum(not f["now_right"] for f in flips))
        metrics["flipped_to_right"] = float(sum(f["now_right"] for f in flips))
    return metrics


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
