"""`bench/rounds.py --kinds`: rounds on a 20k pool with model=backbone (feature cache)
against model=cnn, in one process, the round's two costly steps timed apart.

Each round: train on the labeled images (the CNN from scratch; the backbone's head on
cached features), then `score_and_select` over the whole pool (entropy, batch of
`--batch`), and the queued images join the labeled set with an arbitrary label (the
pool is bench/scoring.py's generated PNGs: no classes, and none needed to time it).
Both models have random weights (`weights: null`): the cost of a pass is the same.
Without DVC, MLflow and git: their cost is the same for both kinds (the rest of
bench/rounds.py measures it).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from activelearn.config import ModelConfig, ModelKind, StrategyConfig
from activelearn.data.images import Preprocessing, preprocess
from activelearn.learner.cached import cached_backbone_features
from activelearn.learner.classifier import Classifier
from activelearn.scoring.select import score_and_select
from activelearn.workspace.features import FeatureCache
from activelearn.workspace.manifest import Manifest

N_CLASSES = 10


def run_kind(kind: str, pool_dir: Path, ids: list[str], args) -> list[dict]:
    recipe = dict(batch_size=32, min_steps=args.min_steps, min_epochs=2)
    if kind == "backbone":
        cfg = ModelConfig(kind=ModelKind.backbone, name="backbone", weights=None, **recipe)
        size = args.backbone_size
        prep = Preprocessing((size, size), 3, "raw")
    else:
        cfg = ModelConfig(**recipe)
        prep = Preprocessing((args.size, args.size), 3)
    names = [f"class{i}" for i in range(N_CLASSES)]
    rng = np.random.default_rng(0)
    labeled = sorted(rng.choice(ids, size=args.batch, replace=False).tolist())  # round 0
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        manifest = Manifest(work / "manifest.csv")
        for sid in ids:
            manifest.set_state(sid, "pool")
        for sid in labeled:
            manifest.set_state(sid, "labeled", round=0, label="class0")
        for n in range(1, args.rounds + 1):
            start = time.perf_counter()
            files = [str(pool_dir / sid) for sid in labeled]
            x = np.stack([preprocess(f, prep) for f in files])
            y = np.array([hash(s) % N_CLASSES for s in labeled])
            model = Classifier.build(names, prep, replace(cfg), seed=0, version=f"round-{n}")
            cache = features = None
            if model.backbone is not None:
                cache = FeatureCache(work / "cache", model.backbone_key())
                features = cached_backbone_features(model, x, files, cache)
            model.fit(x, y, cfg, seed=0, features=features)
            trained = time.perf_counter()
            result = score_and_select(
                model,
                manifest,
                pool_dir,
                StrategyConfig(name="entropy", batch_size=args.batch),
                work / "rounds" / str(n),
                labeled_x=None,
                prep=prep,
                seed=n,
                feature_cache=work / "cache" if cache is not None else None,
            )
            scored = time.perf_counter()
            for item in result.queue:
                manifest.set_state(item.sample_id, "labeled", round=n, label="class0")
                labeled.append(item.sample_id)
            rows.append(
                {
                    "kind": kind,
                    "round": n,
                    "train": trained - start,
                    "score": scored - trained,
                    "round total": scored - start,
                }
            )
            print(f"{kind} round {n}: {rows[-1]['round total']:.1f} s", flush=True)
    return rows
