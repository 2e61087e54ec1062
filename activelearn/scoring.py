"""Stream the unlabeled pool through the model and choose the next batch.

The pool is read in batches, decoded by worker threads a few batches ahead of the
forward pass, and never held in memory whole: per sample only its scores go to
`scores.csv`; features are kept only for the candidate set the diversity selectors
need (the best-scored `candidates` samples plus a uniform sample of as many).

Two engines produce the same `ScoredBlock`s: `local` (threads on this machine, here) and
`ray` (actors on a Ray cluster, `activelearn.scoring_ray`). Everything after scoring,
from writing `scores.csv` to the final selection, is one code path for both, and ties are
broken by a seeded hash of the sample id, so both pick exactly the same batch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from activelearn import strategies
from activelearn.config import ScoringConfig, StrategyConfig, check_engine
from activelearn.data import Preprocessing, UnreadableImage, preprocess
from activelearn.files import atomic_file
from activelearn.manifest import Manifest
from activelearn.queue import QueueItem, write_queue

log = logging.getLogger(__name__)

DETERMINISTIC_MEASURES = ("least_confidence", "margin", "entropy")
MC_MEASURES = ("bald", "variation_ratio")
COLD_START = {"random": "random", "kcenter": "coldstart_kcenter", "typiclust": "typiclust"}
PIXEL_FEATURES = Preprocessing((8, 8), 1)  # the model-free feature of a cold start
MEASURE_COLUMN = "measure:"  # candidate columns with a measure's scores (for the queue)
# Decoding is mostly GIL-bound Python (PIL's file parsing): on two cores a second decode
# thread slows the forward pass more than it speeds decoding (end-to-end 0.76-0.82x of
# decode + forward with one thread, 0.78-0.90x with two). Leave a core to the model there.
DECODE_WORKERS = 1 if (os.cpu_count() or 1) <= 2 else 2


@dataclass
class Batch:
    ids: list[str]
    x: np.ndarray
    unreadable: list[tuple[str, str]]  # (sample id, reason)


def stream_pool(
    ids: list[str],
    pool_dir: Path,
    prep: Preprocessing,
    batch_size: int = 256,
    workers: int = DECODE_WORKERS,
    prefetch: int = 2,
) -> Iterator[Batch]:
    """Decode the pool in batches on `workers` threads, up to `prefetch` batches ahead."""

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


class StrategyError(ValueError):
    """A strategy setting that cannot work; the message names the setting and the fix."""


class ScorerUnavailable(RuntimeError):
    """The scoring engine cannot run (a Ray cluster that does not answer, actors that do
    not start, a node that cannot read the pool); the message says what and the fix."""


def check_strategy(cfg: StrategyConfig) -> None:
    """Fail at once, before any round work, on a strategy setting that cannot work."""
    if cfg.name not in strategies.STRATEGIES:
        raise StrategyError(
            f"strategy.name={cfg.name!r} is not a strategy; choose one of "
            f"{', '.join(strategies.STRATEGIES)}"
        )
    if cfg.cold_start not in COLD_START:
        raise StrategyError(
            f"strategy.cold_start={cfg.cold_start!r}: choose one of {', '.join(COLD_START)}"
        )
    for setting, value, least in (
        ("batch_size", cfg.batch_size, 1),
        ("candidates", cfg.candidates, 0),
        ("mc_samples", cfg.mc_samples, 0),
    ):
        if value < least:
            raise StrategyError(f"strategy.{setting}={value}: must be at least {least}")
    if strategies.STRATEGIES[cfg.name].measure in MC_MEASURES and cfg.mc_samples < 2:
        raise StrategyError(
            f"strategy={cfg.name} needs Monte-Carlo samples: set strategy.mc_samples=20"
        )
    if unknown := strategies.unknown_params(cfg.name, cfg.params):
        raise StrategyError(
            f"strategy.params: {cfg.name} has no parameter {', '.join(unknown)}; "
            f"it accepts {', '.join(sorted(strategies.selector_params(cfg.name))) or 'none'}"
        )
    if cfg.params:
        try:  # the selector on a few planted samples: a bad value fails now, not after scoring
            _dry_run(cfg.name, dict(cfg.params))
        except (ValueError, TypeError) as err:
            raise StrategyError(f"strategy.params: {err}") from err


def _dry_run(name: str, params: dict) -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(8, 2)).transpose(0, 2, 1)  # [8, 3, 2 samples]
    if strategies.STRATEGIES[name].measure not in MC_MEASURES:
        probas = probas.mean(axis=-1)
    features = rng.normal(size=(10, 4))
    strategies.select_batch(
        name, probas, 2, rng, features=features[:8], labeled_features=features[8:], **params
    )


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
    classifier, ids: list[str], pool_dir: Path, plan: ScoringPlan, batch_size: int
) -> Iterator[ScoredBlock]:
    """The local engine: decode threads a few batches ahead of one model."""
    for batch in stream_pool(ids, pool_dir, plan.prep, batch_size):
        yield score_batch(classifier, batch, plan)


@dataclass
class ScoringResult:
    queue: list[QueueItem]
    summary: dict


def score_and_select(
    classifier,
    manifest: Manifest,
    pool_dir: str | Path,
    cfg: StrategyConfig,
    round_dir: Path,
    *,
    labeled_x: np.ndarray | None,
    prep: Preprocessing,
    seed: int,
    batch_size: int | None = None,
    scoring: ScoringConfig | None = None,
    model_path: str | Path | None = None,
) -> ScoringResult:
    """Score every `pool` sample of the manifest, pick a batch, write the round's files.

    `classifier` None means a cold start: no model yet, selection by `cfg.cold_start`.
    Unreadable pool files are recorded as rejected in the manifest (caller saves it).
    Writes `round_dir/scores.csv`, `queue.jsonl` and `queue_summary.json`.
    `scoring` picks the engine (default local); `scoring.engine=ray` needs `model_path`,
    the `.bentomodel` file `classifier` was loaded from, at a path every node can read.
    `batch_size` overrides `scoring.batch_size`.
    """
    scoring = scoring or ScoringConfig()
    batch_size = batch_size or scoring.batch_size
    pool_dir = Path(pool_dir)
    rng = np.random.default_rng(seed)
    cold = classifier is None
    plan = ScoringPlan.of(cfg, cold, prep, seed)
    check_engine(scoring)

    ids = manifest.in_state("pool")
    if scoring.engine == "ray":
        from activelearn.scoring_ray import score_on_ray  # imports ray: an optional extra

        blocks = score_on_ray(ids, pool_dir, plan, model_path, scoring, batch_size)
    else:
        blocks = score_locally(classifier, ids, pool_dir, plan, batch_size)
    candidates = CandidateSet(plan.candidates)
    class_names = [] if cold else classifier.class_names
    round_dir.mkdir(parents=True, exist_ok=True)
    n_scored, confidence, unreadable = 0, strategies.MeanConfidence(), []
    with atomic_file(round_dir / "scores.csv", newline="") as f, contextlib.closing(blocks):
        writer = csv.writer(f)
        writer.writerow(["sample_id", "predicted", "confidence", *plan.measures])
        with tqdm(
            total=len(ids),
            desc=f"scoring the pool ({scoring.engine})",
            unit="image",
            disable=None,
        ) as progress:
            for block in blocks:
                progress.update(len(block.ids) + len(block.unreadable))
                unreadable += block.unreadable
                candidates.absorb(block.candidates)
                if cold or not block.ids:
                    continue
                _write_score_rows(writer, block, class_names, plan.measures)
                n_scored += len(block.ids)
                confidence.add(block.confidence)
    for sid, reason in unreadable:
        log.warning("pool image rejected: %s", reason)
        manifest.set_state(sid, "rejected", reason=reason)

    chosen = candidates.merged()
    name = plan.strategy
    pool_confidence = confidence.value
    if not chosen or len(chosen["id"]) == 0:
        queue: list[QueueItem] = []
    else:
        picks, pick_scores = select_candidates(
            classifier, chosen, plan, cfg, rng, labeled_x, pool_confidence
        )
        queue = [
            QueueItem(
                str(chosen["id"][i]),
                rank,
                *(
                    (None, None)
                    if cold
                    else _prediction(class_names, chosen["predicted"][i], chosen["confidence"][i])
                ),
                score=float(pick_scores[i]),
                scores={m: float(chosen[MEASURE_COLUMN + m][i]) for m in plan.measures},
            )
            for rank, i in enumerate(picks, start=1)
        ]
    write_queue(round_dir / "queue.jsonl", queue)
    summary = {
        "strategy": name,
        "cold_start": cold,
        "scored": n_scored,
        "unreadable": len(unreadable),
        "queued": len(queue),
        "pool_confidence": pool_confidence,
        "class_mix": dict(Counter(item.predicted for item in queue if item.predicted)),
    }
    (round_dir / "queue_summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "queued %d of %d scored samples with %s; class mix %s",
        len(queue),
        n_scored,
        name,
        summary["class_mix"],
    )
    return ScoringResult(queue, summary)


def top_class(probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's predicted class and its probability (averaged over MC samples); a row
    with NaN/inf has no prediction: class -1, probability NaN."""
    mean = probas.mean(axis=-1) if probas.ndim == 3 else probas
    finite = np.isfinite(mean).all(axis=1)
    return np.where(finite, mean.argmax(axis=1), -1), np.where(finite, mean.max(axis=1), np.nan)


def _prediction(class_names: list[str], predicted: int, confidence: float) -> tuple:
    """(class name, probability) of one row, both None when the model gave none."""
    if predicted < 0:
        return None, None
    return class_names[predicted], float(confidence)


def _write_score_rows(writer, block: ScoredBlock, class_names: list[str], measures) -> None:
    for j, sid in enumerate(block.ids):
        predicted, confidence = _prediction(class_names, block.predicted[j], block.confidence[j])
        writer.writerow(
            [
                sid,
                predicted or "",
                "" if confidence is None else f"{confidence:.6f}",
                *(f"{block.scores[m][j]:.6f}" for m in measures),
            ]
        )


def select_candidates(
    classifier,
    chosen: dict[str, np.ndarray],
    plan: ScoringPlan,
    cfg: StrategyConfig,
    rng: np.random.Generator,
    labeled_x: np.ndarray | None,
    pool_confidence: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The strategy's batch out of the merged candidate set: (rows of `chosen`, scores).

    `pool_confidence` is the model's mean confidence over the whole scored pool, which
    the candidate set (the least confident half of it) would underestimate.
    """
    return strategies.select_batch(
        plan.strategy,
        None if plan.cold else chosen["probas"],
        cfg.batch_size,
        rng,
        features=chosen["features"],
        labeled_features=_labeled_features(classifier, labeled_x, plan.cold),
        pool_confidence=pool_confidence,
        candidates=cfg.candidates,
        **plan.params,
    )


def _labeled_features(classifier, labeled_x: np.ndarray | None, cold: bool) -> np.ndarray | None:
    if labeled_x is None or len(labeled_x) == 0:
        return None
    if cold:
        return None  # pixel features of the labeled set would need a second decode
    return np.concatenate(
        [
            classifier.predict_with_features(labeled_x[i : i + 256])[1]
            for i in range(0, len(labeled_x), 256)
        ]
    )


def predict_items(classifier, items: list[QueueItem], pool_dir: str | Path) -> list[QueueItem]:
    """This model's prediction for already-queued samples (their rank and score are kept)."""
    pool_dir = Path(pool_dir)
    out = []
    ids = [item.sample_id for item in items]
    by_id = {item.sample_id: item for item in items}
    for batch in stream_pool(ids, pool_dir, classifier.prep):
        if not batch.ids:
            continue
        predicted, confidence = top_class(classifier.predict_proba(batch.x))
        for sid, c, p in zip(batch.ids, predicted, confidence, strict=True):
            item = by_id[sid]
            label, p = _prediction(classifier.class_names, c, p)
            out.append(QueueItem(sid, item.rank, label, p, item.score))
    return out
