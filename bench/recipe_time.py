"""The training recipes' fit time on the same labeled digits, against the first recipe's.

    .venv/bin/python bench/recipe_time.py [--labels 50 200] [--repeats 3] \\
        --recipes today= aug_ema_bal=augment.enabled=true,ema=0.99,class_balanced=true

Each recipe (`name=` + comma-separated model settings, as campaigns.py's --recipes)
trains a fresh digits CNN on the same random labeled set; the recipes take turns, so
load from other jobs falls on all of them alike. Prints the median fit seconds and its
ratio to the first recipe's, per labeled-set size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.campaigns import (  # noqa: E402
    digits_preprocessing,
    load_digits_split,
    model_config,
    parse_recipes,
    train_model,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", nargs="+", type=int, default=[50, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", required=True)
    args = parser.parse_args(argv)
    recipes = {name: model_config(o) for name, o in parse_recipes(args.recipes).items()}
    prep = digits_preprocessing()
    print("| labels | recipe | median fit s | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="recipe-time-") as tmp:
        digits = load_digits_split(Path(tmp), 0, 2, prep)
        rng = np.random.default_rng(0)
        for n in args.labels:
            picked = rng.choice(len(digits.pool_ids), n - len(digits.seed_y), replace=False)
            x = np.concatenate([digits.seed_x, digits.pool_x[picked]])
            y = np.concatenate([digits.seed_y, digits.pool_y[picked]])
            seconds: dict[str, list[float]] = {name: [] for name in recipes}
            for _ in range(args.repeats):
                for name, cfg in recipes.items():
                    start = time.perf_counter()
                    train_model(digits, x, y, prep, cfg, 0)
                    seconds[name].append(time.perf_counter() - start)
            first = float(np.median(next(iter(seconds.values()))))
            for name, values in seconds.items():
                median = float(np.median(values))
                print(f"| {n} | {name} | {median:.2f} | {median / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
