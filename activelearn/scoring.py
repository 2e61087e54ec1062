"""Stream the unlabeled pool through the model and choose the next batch.

The pool is read in batches, decoded by worker threads a few batches ahead of the
forward pass, and never held in memory whole: per sample only its scores go to
`scores.csv`; features are kept only for the candidate set the diversity selectors
need (the best-scored `candidates` samples plus a uniform sample of as many).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from activelearn import strategies
from activelearn.config import StrategyConfig
from activelearn.data import Preprocessing, UnreadableImage, preprocess
from activelearn.manifest import Manifest
from activelearn.queue import QueueItem, write_queue

log = logging.getLogger(__name__)

DETERMINISTIC_MEASURES = ("least_confidence", "margin", "entropy")
MC_MEASURES = ("bald", "variation_ratio")
COLD_START = {"random": "random", "kcenter": "coldstart_kcenter", "typiclust": "typiclust"}
PIXEL_FEATURES = Preprocessing((8, 8), 1)  # the model-free feature of a cold start


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
    workers: int = 2,
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


class CandidateSet:
    """The `size` best keys seen so far plus a uniform reservoir of `size`: bounded memory."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.best: dict[str, np.ndarray] = {}
        self.reservoir: dict[str, np.ndarray] = {}

    def add(self, key: np.ndarray | None, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        # A random tie-break key: equal scores never ranked by array order.
        columns["_u"] = self.rng.random(n)
        if key is not None:
            columns["_key"] = key
            self.best = _keep(self.best, columns, self.size, by=("_key", "_u"))
        self.reservoir = _keep(self.reservoir, columns, self.size, by=("_u",))

    def merged(self) -> dict[str, np.ndarray]:
        """Both halves without duplicates (ids are unique per pass)."""
        if not self.best:
            return self.reservoir
        seen = set(self.best["id"].tolist())
        extra = np.array([i not in seen for i in self.reservoir["id"]], dtype=bool)
        return {k: np.concatenate([self.best[k], self.reservoir[k][extra]]) for k in self.best}


def _keep(current: dict, new: dict, size: int, by: tuple[str, ...]) -> dict:
    both = {k: np.concatenate([current[k], v]) if current else v for k, v in new.items()}
    if len(both["_u"]) <= size:
        return both
    order = np.lexsort(tuple(both[k] for k in reversed(by)))[::-1][:size]  # highest first
    return {k: v[order] for k, v in both.items()}


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
    batch_size: int = 256,
) -> ScoringResult:
    """Score every `pool` sample of the manifest, pick a batch, write the round's files.

    `classifier` None means a cold start: no model yet, selection by `cfg.cold_start`.
    Unreadable pool files are recorded as rejected in the manifest (caller saves it).
    Writes `round_dir/scores.csv`, `queue.jsonl` and `queue_summary.json`.
    """
    pool_dir = Path(pool_dir)
    rng = np.random.default_rng(seed)
    cold = classifier is None
    name = COLD_START[cfg.cold_start] if cold else cfg.name
    if name not in strategies.STRATEGIES:
        raise ValueError(
            f"strategy.name={name!r} is not a strategy; choose one of "
            f"{', '.join(strategies.STRATEGIES)}"
        )
    strategy = strategies.STRATEGIES[name]
    mc = 0 if cold else cfg.mc_samples
    measures = () if cold else DETERMINISTIC_MEASURES + (MC_MEASURES if mc else ())
    if strategy.measure in MC_MEASURES and not mc:
        raise ValueError(f"strategy={name} needs Monte-Carlo samples: set strategy.mc_samples=20")

    ids = manifest.in_state("pool")
    candidates = CandidateSet(max(cfg.candidates, cfg.batch_size), rng)
    class_names = [] if cold else classifier.class_names
    round_dir.mkdir(parents=True, exist_ok=True)
    scores_path = round_dir / "scores.csv"
    fd, tmp = tempfile.mkstemp(dir=round_dir, prefix=".scores-")
    n_scored, unreadable = 0, []
    with os.fdopen(fd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample_id", "predicted", "confidence", *measures])
        for batch in tqdm(
            stream_pool(ids, pool_dir, PIXEL_FEATURES if cold else prep, batch_size),
            total=-(-len(ids) // batch_size),
            desc="scoring the pool",
            unit="batch",
            disable=None,
        ):
            unreadable += batch.unreadable
            if not batch.ids:
                continue
            ids_array = np.array(batch.ids, dtype=object)
            if cold:
                candidates.add(None, id=ids_array, features=batch.x.reshape(len(batch.x), -1))
                continue
            probas, features = classifier.predict_with_features(batch.x, mc)
            mean = probas.mean(axis=-1) if probas.ndim == 3 else probas
            scores = {m: strategies.MEASURES[m](probas) for m in measures}
            predicted, confidence = mean.argmax(axis=1), mean.max(axis=1)
            for j, sid in enumerate(batch.ids):
                writer.writerow(
                    [
                        sid,
                        class_names[predicted[j]],
                        f"{confidence[j]:.6f}",
                        *(f"{scores[m][j]:.6f}" for m in measures),
                    ]
                )
            key = scores.get(strategy.measure) if strategy.measure != "random" else None
            candidates.add(
                key,
                id=ids_array,
                probas=probas,
                features=features,
                predicted=predicted,
                confidence=confidence,
            )
            n_scored += len(batch.ids)
    os.replace(tmp, scores_path)
    for sid, reason in unreadable:
        log.warning("pool image rejected: %s", reason)
        manifest.set_state(sid, "rejected", reason=reason)

    chosen = candidates.merged()
    if not chosen or len(chosen["id"]) == 0:
        queue: list[QueueItem] = []
    else:
        labeled_features = _labeled_features(classifier, labeled_x, cold)
        picks, pick_scores = strategies.select_batch(
            name,
            None if cold else chosen["probas"],
            cfg.batch_size,
            rng,
            features=chosen["features"],
            labeled_features=labeled_features,
            n_labeled=0 if labeled_x is None else len(labeled_x),
            n_classes=len(class_names) or None,
            candidates=cfg.candidates,
        )
        queue = [
            QueueItem(
                sample_id=str(chosen["id"][i]),
                rank=rank,
                predicted=None if cold else class_names[int(chosen["predicted"][i])],
                confidence=None if cold else float(chosen["confidence"][i]),
                score=float(pick_scores[i]),
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
        probas = classifier.predict_proba(batch.x)
        for sid, p in zip(batch.ids, probas, strict=True):
            out.append(
                QueueItem(
                    sample_id=sid,
                    rank=by_id[sid].rank,
                    score=by_id[sid].score,
                    predicted=classifier.class_names[int(p.argmax())],
                    confidence=float(p.max()),
                )
            )
    return out
