"""Backbone features through the feature cache: computed for the images the cache lacks,
read for the rest; training and scoring both go through here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from activelearn.workspace.features import FeatureCache


def cached_backbone_features(
    classifier, x: np.ndarray, files: list[str | Path], cache: FeatureCache
) -> np.ndarray:
    """The backbone's features of decoded images `x` (from `files`): from the cache, the
    missing ones computed from `x` and stored."""
    if len(files) != len(x):  # arrays from an older prepare, without their files
        return classifier.backbone_features(x)
    digests = cache.digests([Path(f) for f in files])
    found, known = cache.lookup(digests)
    out = np.zeros((len(x), classifier.n_backbone_features), np.float32)
    if known is not None:
        out[found] = known
    if (~found).any():
        out[~found] = classifier.backbone_features(x[~found])
        cache.add([d for d, ok in zip(digests, found, strict=True) if not ok], out[~found])
    return out
