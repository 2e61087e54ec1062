"""The feature cache's storage (no model here): by backbone key and file content, one
rename per shard, a cut-short shard ignored, a file read again only when it changed."""

from __future__ import annotations

import os

import numpy as np

from activelearn.workspace import features as features_module
from activelearn.workspace.features import FeatureCache


def test_features_are_found_by_content_and_key_and_survive_a_reload(tmp_path):
    for name, data in (("a.png", b"first"), ("b.png", b"second"), ("copy.png", b"first")):
        (tmp_path / name).write_bytes(data)
    cache = FeatureCache(tmp_path / "cache", "key1")
    digests = cache.digests([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "copy.png"])
    assert digests[0] == digests[2] != digests[1]  # the content, not the name
    found, values = cache.lookup(digests)
    assert not found.any() and values is None
    cache.add(digests[:2], np.array([[1.0, 2.0], [3.0, 4.0]]))

    again = FeatureCache(tmp_path / "cache", "key1")
    found, values = again.lookup(digests)
    assert found.all()
    np.testing.assert_array_equal(values, [[1, 2], [3, 4], [1, 2]])
    other = FeatureCache(tmp_path / "cache", "key2")  # other weights: nothing shared
    assert not other.lookup(digests)[0].any() and len(other) == 0


def test_a_file_is_read_again_only_when_its_size_or_mtime_changed(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    cache = FeatureCache(tmp_path / "cache", "k")
    first = cache.digests([path])
    cache.flush()
    reads = []
    real = features_module.content_digest
    monkeypatch.setattr(features_module, "content_digest", lambda p: reads.append(p) or real(p))
    assert FeatureCache(tmp_path / "cache", "k").digests([path]) == first and reads == []
    path.write_bytes(b"two")
    os.utime(path, ns=(1, 1))
    assert FeatureCache(tmp_path / "cache", "k").digests([path]) != first and reads == [path]


def test_a_cut_short_shard_is_ignored_and_computed_again(tmp_path):
    cache = FeatureCache(tmp_path, "k")
    cache.add(["d1"], np.ones((1, 3)))
    (shard,) = (tmp_path / "k").glob("*.npz")
    shard.write_bytes(shard.read_bytes()[:20])
    fresh = FeatureCache(tmp_path, "k")
    assert not fresh.lookup(["d1"])[0].any()
    fresh.add(["d1"], np.zeros((1, 3)))  # a new shard after the broken one
    assert FeatureCache(tmp_path, "k").lookup(["d1"])[0].all()
