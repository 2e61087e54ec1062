"""Query strategies: class probabilities in, scores out; then a selector picks the batch.

Two layers of pure functions, with no model framework in sight, one family per module:

* ``measures``: a **measure** takes ``probas``, the model's class probabilities, shaped
  ``[n, classes]`` (one deterministic pass) or ``[n, classes, T]`` (T Monte-Carlo
  dropout passes), and returns one float per sample. Higher = more informative.
  Rows containing NaN/inf cannot be scored: they get ``INVALID_SCORE`` (below every real
  score), are counted in a log warning, and every selector takes them only after all
  valid rows.
* ``selectors`` (top-k, ranked batch, k-center) and ``clusters`` (cluster-margin,
  TypiClust): a **selector** takes scores and/or feature vectors (the model's embeddings)
  and returns indices into the given arrays, most important first, ``min(k, n)`` of them,
  never a duplicate. Ties are broken by the caller's seeded ``numpy.random.Generator``,
  never by array order.

A strategy is a measure plus a selector: one entry in ``registry.STRATEGIES``; the
selector's parameters come from the caller (``strategy.params`` in the config).
``select_batch`` is the one function the scorer calls. Imports only `config` and `errors`.
"""

from activelearn.strategies._inputs import INVALID_SCORE
from activelearn.strategies.clusters import cluster_then_top, typiclust
from activelearn.strategies.measures import (
    MEASURES,
    MeanConfidence,
    bald,
    entropy,
    least_confidence,
    margin,
    mean_confidence,
    random,
    variation_ratio,
)
from activelearn.strategies.registry import (
    SELECTORS,
    STRATEGIES,
    Strategy,
    select_batch,
    selector_params,
    unknown_params,
)
from activelearn.strategies.selectors import kcenter_greedy, ranked_batch, top_k

__all__ = [
    "INVALID_SCORE",
    "MEASURES",
    "SELECTORS",
    "STRATEGIES",
    "MeanConfidence",
    "Strategy",
    "bald",
    "cluster_then_top",
    "entropy",
    "kcenter_greedy",
    "least_confidence",
    "margin",
    "mean_confidence",
    "random",
    "ranked_batch",
    "select_batch",
    "selector_params",
    "top_k",
    "typiclust",
    "unknown_params",
    "variation_ratio",
]
