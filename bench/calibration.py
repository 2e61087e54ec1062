"""Temperature scaling on the round models of a campaigns.py run: ECE before and after.

    .venv/bin/python bench/calibration.py --from /tmp/campaigns-bench --campaign hybrid \\
        [--seeds 0 1 2] [--at 50 100 200] [--folds 2] [--recipe key=value,...]

For each seed, the labeled set the campaign `--campaign` had at each `--at` labels (its
seed set plus the batches its rounds queued, read from `<from>/rounds/seed-<seed>.csv`)
is trained on with the recipe (conf/model/cnn.yaml + `--recipe`), once as is and once
with `calibration_folds=--folds`; both are scored on the fixed test set. Prints the
expected calibration error (15 bins) before and after the temperature, the temperature,
that the argmax predictions are the same, and the calibrated fit's time against the
plain fit's (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.campaigns import (  # noqa: E402
    digits_preprocessing,
    load_digits_split,
    model_config,
    read_rows,
    train_model,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--campaign", default="hybrid")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--at", nargs="+", type=int, default=[50, 100, 200])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--recipe", default="")
    parser.add_argument("--start-per-class", type=int, default=2)
    args = parser.parse_args(argv)
    from activelearn.learner.metrics import expected_calibration_error

    prep, mcfg = digits_preprocessing(), model_config(args.recipe)
    calibrated_cfg = replace(mcfg, calibration_folds=args.folds)
    campaigns = read_rows(args.source)
    results = {at: [] for at in args.at}
    print("| labels | seed | ECE before | ECE after | temperature | same argmax | time ratio |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        rows = campaigns[args.campaign, seed]
        with tempfile.TemporaryDirectory(prefix="calibration-bench-") as tmp:
            digits = load_digits_split(Path(tmp), seed, args.start_per_class, prep)
            position = {sid: i for i, sid in enumerate(digits.pool_ids)}
            for at in args.at:
                queued = [s for r in rows if int(r["labels"]) < at for s in r["queued"].split()]
                picked = np.array([position[s] for s in queued], dtype=np.intp)
                x = np.concatenate([digits.seed_x, digits.pool_x[picked]])
                y = np.concatenate([digits.seed_y, digits.pool_y[picked]])
                assert len(y) == at, (len(y), at)
                start = time.perf_counter()
                plain = train_model(digits, x, y, prep, mcfg, seed)
                middle = time.perf_counter()
                model = train_model(digits, x, y, prep, calibrated_cfg, seed)
                end = time.perf_counter()
                raw = model.predict_proba(digits.test_x, calibrated=False)
                scaled = model.predict_proba(digits.test_x)
                before = expected_calibration_error(raw, digits.test_y)
                after = expected_calibration_error(scaled, digits.test_y)
                same = bool((raw.argmax(1) == scaled.argmax(1)).all())
                ratio = (end - middle) / (middle - start)
                del plain
                results[at].append((before, after, model.temperature, ratio))
                print(
                    f"| {at} | {seed} | {before:.4f} | {after:.4f} | {model.temperature:.3f} "
                    f"| {same} | {ratio:.2f} |",
                    flush=True,
                )
    print()
    print("| labels | ECE before | ECE after | temperature | time ratio |")
    print("|---|---|---|---|---|")
    for at, values in results.items():
        b, a, t, r = (np.mean([v[i] for v in values]) for i in range(4))
        print(f"| {at} | {b:.4f} | {a:.4f} | {t:.3f} | {r:.2f} |")


if __name__ == "__main__":
    main()
