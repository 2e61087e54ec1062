"""Selection speed and memory at pool scale: ours against modAL in the same run.

    .venv/bin/python bench/selection.py [--pool 20000] [--dim 128] [--batch 100]

Part 1 runs modAL's ``uncertainty_batch_sampling`` and our ``ranked_batch`` on the same
features and probabilities with 0 (modAL's cold start), 100 and 1000 labeled samples,
checks the picks are identical, and reports time, time ratio and peak traced memory.
Part 2 times every registered strategy through ``select_batch`` (best of ``--repeat``).
Calls run under tracemalloc (numpy's buffers are traced), so times include its small
overhead on both sides alike.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from modAL.batch import uncertainty_batch_sampling

from activelearn import strategies as st


class FixedProbaLearner:
    """What modAL's batch query reads from a learner: predict_proba and X_training."""

    def __init__(self, probas: np.ndarray, labeled: np.ndarray | None) -> None:
        self.probas = probas
        self.X_training = labeled
        self.on_transformed = False

    def predict_proba(self, X, **kwargs):  # noqa: N803 (sklearn's argument name)
        return self.probas


def measured(call: Callable[[], object]) -> tuple[object, float, float]:
    """(result, seconds, peak MiB traced) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, peak / 2**20


def clustered_features(rng: np.random.Generator, n: int, dim: int, n_blobs: int) -> np.ndarray:
    """Embedding-like features: Gaussian blobs (one per class, say) plus noise."""
    centers = rng.normal(0, 3, size=(n_blobs, dim))
    return centers[rng.integers(n_blobs, size=n)] + rng.normal(size=(n, dim))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="part 2: best of this many")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    features = clustered_features(rng, args.pool, args.dim, args.classes)
    labeled_all = clustered_features(rng, 1000, args.dim, args.classes)
    probas_mc = rng.dirichlet(np.full(args.classes, 0.3), size=(args.pool, 10))
    probas_mc = probas_mc.transpose(0, 2, 1)  # [n, classes, T]
    probas = probas_mc.mean(axis=2)
    uncertainty = st.least_confidence(probas)

    print(f"pool {args.pool} x {args.dim}, batch {args.batch}, {args.classes} classes")
    print()
    header = (
        f"{'ranked batch':<18}{'ours s':>9}{'modAL s':>10}{'ratio':>8}"
        f"{'ours MiB':>10}{'modAL MiB':>11}  same picks"
    )
    print(header)
    print("-" * len(header))
    for n_labeled in (0, 100, 1000):
        labeled = labeled_all[:n_labeled] if n_labeled else None
        ours, our_s, our_mib = measured(
            lambda labeled=labeled: st.ranked_batch(
                uncertainty, features, labeled, args.batch, args.seed
            )
        )
        (theirs, _), their_s, their_mib = measured(
            lambda labeled=labeled: uncertainty_batch_sampling(
                FixedProbaLearner(probas, labeled), features, n_instances=args.batch
            )
        )
        same = np.array_equal(ours, theirs)
        print(
            f"{f'{n_labeled} labeled':<18}{our_s:>9.2f}{their_s:>10.2f}"
            f"{their_s / our_s:>7.1f}x{our_mib:>10.0f}{their_mib:>11.0f}  {same}"
        )

    print()
    header = f"{'strategy (100 labeled)':<24}{'select s':>10}{'peak MiB':>10}"
    print(header)
    print("-" * len(header))
    for name, strategy in st.STRATEGIES.items():
        mc = strategy.measure in ("bald", "variation_ratio")
        runs = [
            measured(
                lambda name=name, mc=mc: st.select_batch(
                    name,
                    probas_mc if mc else probas,
                    args.batch,
                    args.seed,
                    features=features,
                    labeled_features=labeled_all[:100],
                )
            )
            for _ in range(args.repeat)
        ]
        seconds = min(run[1] for run in runs)
        mib = max(run[2] for run in runs)
        print(f"{name:<24}{seconds:>10.2f}{mib:>10.0f}")


if __name__ == "__main__":
    main()
