"""The served model, reloaded when its file changes.

Every request asks `current()`, which costs one `stat` of the model file. When the
file's mtime, size or inode changed, that request loads the new file while concurrent
requests keep being answered by the old model; a file that fails to load (half written,
corrupt) is logged and skipped until it changes again, and the old model stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from activelearn.model import Classifier

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # mtime_ns, size, inode


class ModelStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.classifier: Classifier | None = None
        self.loaded_at: float | None = None
        self.error: str | None = None
        self._signature: Signature | None = None  # of the file `classifier` came from
        self._failed: Signature | None = None  # of a file that would not load
        self._reload_lock = threading.Lock()
        self._predict_lock = threading.Lock()

    def current(self) -> Classifier | None:
        """The model to answer with, after loading a changed file if there is one."""
        signature = self._stat()
        if signature is None or signature in (self._signature, self._failed):
            return self.classifier
        # Without a model, wait for the load; with one, let another request do it.
        if self._reload_lock.acquire(blocking=self.classifier is None):
            try:
                signature = self._stat()
                if signature is not None and signature not in (self._signature, self._failed):
                    self._load(signature)
            finally:
                self._reload_lock.release()
        return self.classifier

    def predict_proba(self, classifier: Classifier, x: np.ndarray) -> np.ndarray:
        """Class probabilities [n, classes], one forward pass at a time (CPU-bound anyway)."""
        with self._predict_lock:
            return classifier.predict_proba(x, batch_size=max(1, len(x)))

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            if self.error is None and self.classifier is None:
                self.error = f"no model at {self.path}: train one first (dvc repro)"
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self, signature: Signature) -> None:
        started = time.perf_counter()
        try:
            classifier = Classifier.load(self.path)
        except Exception as err:  # any broken file must not take the server down
            self._failed = signature
            self.error = str(err)  # names the file, what is wrong and how to get it back
            log.error("%s; still serving %s", self.error, self.version or "no model")
            return
        previous = self.version
        self.classifier, self._signature, self._failed = classifier, signature, None
        self.loaded_at, self.error = time.time(), None
        log.info(
            "serving model %s from %s (was %s), loaded in %.1f s",
            classifier.version,
            self.path,
            previous or "none",
            time.perf_counter() - started,
        )

    @property
    def version(self) -> str | None:
        return self.classifier.version if self.classifier is not None else None
