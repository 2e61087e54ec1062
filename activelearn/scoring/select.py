"""Score the whole pool with an engine, write `scores.csv`, and select the round's
batch from the candidate set; predictions for queued samples.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from activelearn import strategies
from activelearn.config import ScoringConfig, StrategyConfig
from activelearn.core.files import atomic_file
from activelearn.data.images import Preprocessing
from activelearn.learner.cached import cached_backbone_features
from activelearn.scoring.stream import (
    MEASURE_COLUMN,
    CandidateSet,
    ScoredBlock,
    ScoringPlan,
    score_locally,
    stream_pool,
    top_class,
)
from activelearn.workspace.features import FeatureCache
from activelearn.workspace.manifest import Manifest
from activelearn.workspace.queue import QueueItem, write_queue

log = logging.getLogger(__name__)


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
    feature_cache: str | Path | None = None,
    labeled_files: list[str] | None = None,
    other_x: np.ndarray | None = None,
) -> ScoringResult:
    """Score every `pool` sample of the manifest, pick a batch, write the round's files.

    `classifier` None means a cold start: no model yet, selection by `cfg.cold_start`.
    Unreadable pool files are recorded as rejected in the manifest (caller saves it).
    Writes `round_dir/scores.csv`, `queue.jsonl` and `queue_summary.json`.
    `scoring` picks the engine (default local); `scoring.engine=ray` needs `model_path`,
    the `.bentomodel` file `classifier` was loaded from, at a path every node can read.
    `batch_size` overrides `scoring.batch_size`.
    `feature_cache`: the folder of the feature cache, used when the model has a frozen
    backbone (local engine): each file goes through the backbone once per campaign, and
    the labeled images' features too when `labeled_files` (the files of `labeled_x`) are
    given.
    `other_x`: the images people answered "other" for (of no class), which the hybrid
    learns to spend fewer answers on.
    """
    scoring = scoring or ScoringConfig()
    batch_size = batch_size or scoring.batch_size
    pool_dir = Path(pool_dir)
    rng = np.random.default_rng(seed)
    cold = classifier is None
    plan = ScoringPlan.of(cfg, cold, prep, seed)

    ids = manifest.in_state("pool")
    cache = None
    if feature_cache is not None and not cold and classifier.backbone is not None:
        cache = FeatureCache(feature_cache, classifier.backbone_key())
    if scoring.engine == "ray":
        from activelearn.scoring.ray_engine import score_on_ray

        blocks = score_on_ray(ids, pool_dir, plan, model_path, scoring, batch_size)
    else:
        blocks = score_locally(classifier, ids, pool_dir, plan, batch_size, cache)
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
        labeled = _labeled_features(classifier, labeled_x, cold, cache, labeled_files)
        picks, pick_scores = select_candidates(
            classifier, chosen, plan, cfg, rng, labeled_x, pool_confidence, labeled, other_x
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
    labeled_features: np.ndarray | None = None,
    other_x: np.ndarray | None = None,
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
        labeled_features=labeled_features
        if labeled_features is not None
        else _labeled_features(classifier, labeled_x, plan.cold),
        pool_confidence=pool_confidence,
        candidates=cfg.candidates,
        other_features=_labeled_features(classifier, other_x, plan.cold),
        logits=None if plan.cold else classifier.logits_from_features(chosen["features"]),
        **plan.params,
    )


def _labeled_features(
    classifier,
    labeled_x: np.ndarray | None,
    cold: bool,
    cache: FeatureCache | None = None,
    files: list[str] | None = None,
) -> np.ndarray | None:
    if labeled_x is None or len(labeled_x) == 0:
        return None
    if cold:
        return None  # pixel features of the labeled set would need a second decode
    if cache is not None and files is not None and len(files) == len(labeled_x):
        backbone = cached_backbone_features(classifier, labeled_x, files, cache)
        return np.concatenate(
            [
                classifier.predict_from_features(backbone[i : i + 256])[1]
                for i in range(0, len(backbone), 256)
            ]
        )
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
