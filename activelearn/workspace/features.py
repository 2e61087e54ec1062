"""The feature cache: a frozen backbone's output per image, computed once per campaign.

Keyed by the backbone (a digest of its weights and input preprocessing, made by the
learner) and by each file's content, so a changed file is computed again and features
of other weights are never read. Stored as shards (`<key>/<n>.npz`, written in one
rename) under the workspace's `.cache/features/`; not versioned, rebuilt if removed.
A file's content digest is remembered by (path, size, mtime) so an unchanged pool is
not read again each round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from activelearn.core.files import atomic_file, write_atomic

log = logging.getLogger(__name__)

STATS = "stats.json"  # path -> [size, mtime_ns, content digest]


def content_digest(path: str | Path) -> str:
    """A digest of the file's bytes (blake2b, 128 bits)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class FeatureCache:
    """Features by file content for one backbone key; `lookup`, then `add` what was missing."""

    def __init__(self, root: str | Path, backbone_key: str):
        self.root = Path(root)
        self.dir = self.root / backbone_key
        self._rows: dict[str, tuple[int, int]] | None = None  # digest -> (shard, row)
        self._shards: list[np.ndarray] = []
        self._stats: dict[str, list] | None = None
        self._stats_changed = False

    def digests(self, paths: list[Path]) -> list[str]:
        """Each file's content digest, read again only when its size or mtime changed."""
        if self._stats is None:
            try:
                self._stats = json.loads((self.root / STATS).read_text())
            except (OSError, ValueError):
                self._stats = {}
        out = []
        for path in paths:
            key = str(Path(path).resolve())
            st = os.stat(path)
            known = self._stats.get(key)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                out.append(known[2])
                continue
            digest = content_digest(path)
            self._stats[key] = [st.st_size, st.st_mtime_ns, digest]
            self._stats_changed = True
            out.append(digest)
        return out

    def lookup(self, digests: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(found [n] bool, features of the found ones in order, or None if none)."""
        rows = self._load()
        found = np.array([d in rows for d in digests], dtype=bool)
        if not found.any():
            return found, None
        hits = [rows[d] for d, ok in zip(digests, found, strict=True) if ok]
        return found, np.stack([self._shards[s][r] for s, r in hits])

    def add(self, digests: list[str], features: np.ndarray) -> None:
        """Store features of new digests as one more shard (in one rename)."""
        rows = self._load()
        new = [i for i, d in enumerate(digests) if d not in rows]
        if new:
            shard = len(self._shards)
            keys, values = [digests[i] for i in new], np.asarray(features, np.float32)[new]
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.dir / f"{_shard_name(self)}.npz", "wb") as f:
                np.savez(f, keys=np.array(keys), features=values)
            self._shards.append(values)
            rows.update({d: (shard, r) for r, d in enumerate(keys)})
        self.flush()

    def flush(self) -> None:
        if self._stats_changed and self._stats is not None:
            write_atomic(self.root / STATS, json.dumps(self._stats))
            self._stats_changed = False

    def __len__(self) -> int:
        return len(self._load())

    def _load(self) -> dict[str, tuple[int, int]]:
        if self._rows is None:
            self._rows, self._shards = {}, []
            for path in sorted(self.dir.glob("*.npz")) if self.dir.is_dir() else []:
                try:
                    with np.load(path) as shard:
                        keys, values = shard["keys"], shard["features"]
                except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:  # cut short
                    log.warning("feature cache shard %s unreadable (%s): ignored", path, err)
                    continue
                index = len(self._shards)
                self._shards.append(values)
                self._rows.update({str(k): (index, r) for r, k in enumerate(keys)})
        return self._rows


def _shard_name(cache: FeatureCache) -> str:
    """A name after every shard there: shards are read in name order."""
    names = [int(p.stem) for p in cache.dir.glob("*.npz") if p.stem.isdigit()]
    return f"{max(names, default=-1) + 1:06d}"
