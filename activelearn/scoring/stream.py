"""Stream the unlabeled pool through the model and choose the next batch.

The pool is read in batches, decoded by worker threads a few batches ahead of the
forward pass, and never held in memory whole: per sample only its scores go to
`scores.csv`; features are kept only for the candidate set the diversity selectors
need (the best-scored `candidates` samples plus a uniform sample of as many).

Two engines produce the same `ScoredBlock`s: `local` (threads on this machine, here) and
`ray` (actors on a Ray cluster, `activelearn.scoring.ray_engine`). Everything after scoring,
from writing `scores.csv` to the final selection, is one code path for both, and ties are
broken by a seeded hash of the sample id, so both pick exactly the same batch.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from activelearn import strategies
from activelearn.config import StrategyConfig
from activelearn.data.images import Preprocessing, UnreadableImage, preprocess
from activelearn.strategies.registry import (
    COLD_START,
    DETERMINISTIC_MEASURES,
    MC_MEASURES,
    check_strategy,
)
from activelearn.workspace.features import FeatureCache

PIXEL_FEATURES = Preprocessing((8, 8), 1)  # the model-free feature of a cold start
MEASURE_COLUMN = "measure:"  # candidate columns with a measure's scores (for the queue)
# Decoding is mostly GIL-bound Python (PIL's file parsing): on two cores a second decode
# thread slows the forward pass more than it speeds decoding (end-to-end 0.76-0.82x of
# decode + forward with one thread, 0.78-0.90x with two). Leave a core to the model there.
DECODE_WORKERS = 1 if (os.cpu_count() or 1) <= 2 else 2
# Large files are the other way round: libjpeg's and zlib's C code runs without the GIL
# and is most of the time, so a thread per core pays (300 camera JPEGs on 2 cores:
# 4.2-4.8 s with two threads, 4.5-5.7 s with one). Judged by the first file's size.
LARGE_FILE = 256 * 1024  # bytes


@dataclass
class Batch:
    ids: list[str]
    x: np.ndarray
    unreadable: list[tuple[str, str]]  # (sample id, reason)
    features: np.ndarray | None = None  # the frozen backbone's output, instead of x


def stream_cached(
    classifier,
    ids: list[str],
    pool_dir: Path,
    prep: Preprocessing,
    batch_size: int,
    cache: FeatureCache,
) -> Iterator[Batch]:
    """Batches of backbone features: read from the cache, or decoded and computed once
    (and stored) for files not seen with this backbone. Samples cached come first."""
    digests, missing, gone = {}, [], []
    for sid in ids:
        try:
            digests[sid] = cache.digests([pool_dir / sid])[0]
        except OSError as err:
            gone.append((sid, f"{pool_dir / sid}: not a readable image ({err})"))
    known = list(digests)
    found, features = cache.lookup([digests[s] for s in known])
    hits = [s for s, ok in zip(known, found, strict=True) if ok]
    missing = [s for s, ok in zip(known, found, strict=True) if not ok]
    cache.flush()
    if gone:
        yield Batch([], np.zeros(0), gone)
    for i in range(0, len(hits), batch_size):
        yield Batch(hits[i : i + batch_size], np.zeros(0), [], features[i : i + batch_size])
    for batch in stream_pool(missing, pool_dir, prep, batch_size):
        computed = classifier.backbone_features(batch.x)
        cache.add([digests[s] for s in batch.ids], computed)
        yield Batch(batch.ids, np.zeros(0), batch.unreadable, computed)


def stream_pool(
    ids: list[str],
    pool_dir: Path,
    prep: Preprocessing,
    batch_size: int = 256,
    workers: int | None = None,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Decode the pool in batches on `workers` threads, up to `prefetch` batches ahead;
    None: DECODE_WORKERS, or a thread per core for large files."""
    if workers is None:
        workers = DECODE_WORKERS
        if ids and _file_size(pool_dir / ids[0]) >= LARGE_FILE:
            workers = max(workers, os.cpu_count() or 1)

    def decode(chunk: list[str]) -> Batch:
        good, arrays, bad = [], [], []
        for sid in chunk:
            try:
                arrays.append(preprocess(pool_dir / sid, prep))
                good.append(sid)
            except UnreadableImage as err:
                bad.append((sid, str(err)))
        x = np.stack(arrays) if arrays else np.zeros((0, *prep.input_shape), np.float32)
        return Batch(good, x, bad)

    chunks = (ids[i : i + batch_size] for i in range(0, len(ids), batch_size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque(pool.submit(decode, c) for c in islice(chunks, prefetch + workers))
        while pending:
            batch = pending.popleft().result()
            nxt = next(chunks, None)
            if nxt is not None:
                pending.append(pool.submit(decode, nxt))
            yield batch


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tie_keys(ids: list[str] | np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per sample id, fixed by (seed, id) alone.

    The candidate set's random tie-break and reservoir key: it does not depend on the
    order, batching or machine a sample is scored in, so every engine keeps the same set.
    """
    key = (seed % 2**64).to_bytes(8, "little")
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(sid.encode(), digest_size=8, key=key).digest()) >> 11
            for sid in ids
        ),
        dtype=np.float64,
        count=len(ids),
    ) / float(2**53)


class CandidateSet:
    """The `size` best keys seen so far plus a uniform reservoir of `size`: bounded memory.

    Rows carry a `_u` column, their tie-break and reservoir key (`tie_keys`: fixed by seed
    and sample id, so equal scores are never ranked by order). Keeping the top `size` is
    associative, so sets built on separate blocks of the pool and merged with `absorb`
    equal the set built over the whole pool in one pass.
    """

    def __init__(self, size: int):
        self.size = size
        self.best: dict[str, np.ndarray] = {}
        self.reservoir: dict[str, np.ndarray] = {}

    def add(self, key: np.ndarray | None, **columns: np.ndarray) -> None:
        if key is not None:
            columns["_key"] = key
            self.best = _keep(self.best, columns, self.size, by=("_key", "_u"))
        self.reservoir = _keep(self.reservoir, columns, self.size, by=("_u",))

    def absorb(self, other: CandidateSet) -> None:
        """Merge another set (of disjoint samples) into this one."""
        if other.best:
            self.best = _keep(self.best, other.best, self.size, by=("_key", "_u"))
        if other.reservoir:
            self.reservoir = _keep(self.reservoir, other.reservoir, self.size, by=("_u",))

    def merged(self) -> dict[str, np.ndarray]:
        """Both halves without duplicates, in an order fixed by their keys alone."""
        best = _sorted(self.best, by=("_key", "_u"))
        reservoir = _sorted(self.reservoir, by=("_u",))
        if not best:
            return reservoir
        seen = set(best["id"].tolist())
        extra = np.array([i not in seen for i in reservoir["id"]], dtype=bool)
        return {k: np.concatenate([best[k], reservoir[k][extra]]) for k in best}


def _sorted(columns: dict, by: tuple[str, ...]) -> dict:
    if not columns:
        return columns
    order = np.lexsort(tuple(columns[k] for k in reversed(by)))[::-1]  # highest first
    return {k: v[order] for k, v in columns.items()}


def _keep(current: dict, new: dict, size: int, by: tuple[str, ...]) -> dict:
    both = {k: np.concatenate([current[k], v]) if current else v for k, v in new.items()}
    if len(both["_u"]) <= size:
        return both
    order = np.lexsort(tuple(both[k] for k in reversed(by)))[::-1][:size]  # highest first
    return {k: v[order] for k, v in both.items()}


@dataclass(frozen=True)
class ScoringPlan:
    """What to compute per pool sample: resolved once from the strategy config."""

    strategy: str  # the STRATEGIES name in effect (the cold-start one without a model)
    params: dict  # its selector parameters from the config (not for another cold-start one)
    cold: bool  # no model yet: pixel features only
    mc_samples: int
    measures: tuple[str, ...]  # the columns of scores.csv after predicted, confidence
    key_measure: str | None  # the measure the candidate set keeps the best of
    candidates: int  # size of each half of the candidate set
    prep: Preprocessing  # how a file becomes a model input
    seed: int

    @classmethod
    def of(cls, cfg: StrategyConfig, cold: bool, prep: Preprocessing, seed: int) -> ScoringPlan:
        check_strategy(cfg)
        name = COLD_START[cfg.cold_start] if cold else cfg.name
        strategy = strategies.STRATEGIES[name]
        mc = 0 if cold else cfg.mc_samples
        measures = () if cold else DETERMINISTIC_MEASURES + (MC_MEASURES if mc else ())
        key = None if cold or strategy.measure in (None, "random") else strategy.measure
        return cls(
            strategy=name,
            params=dict(cfg.params) if name == cfg.name else {},
            cold=cold,
            mc_samples=mc,
            measures=measures,
            key_measure=key,
            candidates=max(cfg.candidates, cfg.batch_size),
            prep=PIXEL_FEATURES if cold else prep,
            seed=seed,
        )


@dataclass
class ScoredBlock:
    """One scored stretch of the pool, in pool order: what an engine hands the driver."""

    ids: list[str]  # readable samples, in pool order
    predicted: np.ndarray  # [n] class index (empty at a cold start)
    confidence: np.ndarray  # [n] probability of the predicted class
    scores: dict[str, np.ndarray]  # measure -> [n]
    candidates: CandidateSet  # this block's best and reservoir rows, with features
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (sample id, reason)


def score_batch(classifier, batch: Batch, plan: ScoringPlan) -> ScoredBlock:
    """Scores and candidates of one decoded batch: the per-sample work of every engine."""
    block = ScoredBlock(
        batch.ids, np.zeros(0, np.int64), np.zeros(0), {}, CandidateSet(plan.candidates)
    )
    block.unreadable = batch.unreadable
    if not batch.ids:
        return block
    columns = {"id": np.array(batch.ids, dtype=object), "_u": tie_keys(batch.ids, plan.seed)}
    if plan.cold:
        block.candidates.add(None, features=batch.x.reshape(len(batch.x), -1), **columns)
        return block
    mc_seed = int(columns["_u"][0] * 2**31)  # the batch's own masks, whichever engine scores it
    if batch.features is not None:
        probas, features = classifier.predict_from_features(
            batch.features, plan.mc_samples, mc_seed
        )
    else:
        probas, features = classifier.predict_with_features(batch.x, plan.mc_samples, mc_seed)
    block.scores = {m: strategies.MEASURES[m](probas) for m in plan.measures}
    block.predicted, block.confidence = top_class(probas)
    block.candidates.add(
        block.scores[plan.key_measure] if plan.key_measure else None,
        probas=probas,
        features=features,
        predicted=block.predicted,
        confidence=block.confidence,
        **{MEASURE_COLUMN + m: values for m, values in block.scores.items()},
        **columns,
    )
    return block


def score_locally(
    classifier,
    ids: list[str],
    pool_dir: Path,
    plan: ScoringPlan,
    batch_size: int,
    cache: FeatureCache | None = None,
) -> Iterator[ScoredBlock]:
    """The local engine: decode threads a few batches ahead of one model; with a frozen
    backbone and a feature cache, only files new to the backbone are decoded."""
    if cache is not None and not plan.cold:
        batches = stream_cached(classifier, ids, pool_dir, plan.prep, batch_size, cache)
    else:
        batches = stream_pool(ids, pool_dir, plan.prep, batch_size)
    for batch in batches:
        yield score_batch(classifier, batch, plan)


def top_class(probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's predicted class and its probability (averaged over MC samples); a row
    with NaN/inf has no prediction: class -1, probability NaN."""
    mean = probas.mean(axis=-1) if probas.ndim == 3 else probas
    finite = np.isfinite(mean).all(axis=1)
    return np.where(finite, mean.argmax(axis=1), -1), np.where(finite, mean.max(axis=1), np.nan)
