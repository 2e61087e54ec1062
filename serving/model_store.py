"""The served model, loaded in the background and reloaded when its file changes.

One loader thread loads the file at start-up, then checks its identity (mtime, size,
inode: one `stat`) every `check_seconds`, and at once when a request saw it change, and
loads a changed file while requests keep being answered by the old model. It is the only
thread that loads, so loads never run twice at once. `/health` never waits for it; a
request that needs the model waits for the load that is due. A file that fails to load
(half written, corrupt) is logged and skipped until it changes again, and the old model
stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from activelearn.learner.classifier import Classifier
from serving.schemas import ModelState

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # mtime_ns, size, inode


class ModelStore:
    def __init__(self, path: Path, check_seconds: float = 2.0):
        self.path = Path(path)
        self.check_seconds = check_seconds
        self.classifier: Classifier | None = None
        self.loaded_at: float | None = None
        self._error: str | None = None  # why the file at `_failed` would not load
        self._signature: Signature | None = None  # of the file `classifier` came from
        self._failed: Signature | None = None  # of a file that would not load
        self._attempted = threading.Condition()  # notified after each look at the file
        self._wake = threading.Event()
        self._closing = False
        self._predict_lock = threading.Lock()
        threading.Thread(target=self._watch, name="model-loader", daemon=True).start()

    def close(self) -> None:
        """Stop checking; a load in progress finishes in the background."""
        with self._attempted:
            self._closing = True
            self._attempted.notify_all()
        self._wake.set()

    def current(self, wait: bool = False) -> Classifier | None:
        """The model to answer with. A changed file wakes the loader; with `wait`, return
        after the load that is due (the new model, or the old one if the file is broken)."""
        if wait:
            with self._attempted:  # until the file is loaded, refused or gone
                while not self._closing and self._changed() is not None:
                    self._wake.set()  # each time: the file may have changed during a load
                    self._attempted.wait()
        elif self._changed() is not None:
            self._wake.set()
        return self.classifier

    @property
    def state(self) -> ModelState:
        """`loading` while a changed file is due to be loaded, `failed` while it would not
        load (the previous model, if any, is still served), `missing` without file or model."""
        signature = self._stat()
        if signature is None:
            return "loaded" if self.classifier is not None else "missing"
        if signature == self._failed:
            return "failed"
        return "loaded" if signature == self._signature else "loading"

    @property
    def error(self) -> str | None:
        """Why the file is not served: it would not load, or there is none and no model."""
        state = self.state
        if state == "missing":
            return f"no model at {self.path}: train one first (dvc repro)"
        return self._error if state == "failed" else None

    @property
    def version(self) -> str | None:
        return self.classifier.version if self.classifier is not None else None

    def predict_proba(self, classifier: Classifier, x: np.ndarray) -> np.ndarray:
        """Class probabilities [n, classes], one forward pass at a time (CPU-bound anyway)."""
        with self._predict_lock:
            return classifier.predict_proba(x, batch_size=max(1, len(x)))

    def _stat(self) -> Signature | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _changed(self) -> Signature | None:
        """The file's signature if it changed since it was last loaded or refused."""
        signature = self._stat()
        if signature is None or signature in (self._signature, self._failed):
            return None
        return signature

    def _watch(self) -> None:
        while not self._closing:
            self._wake.clear()  # before the check: a wake during the load is not lost
            if (signature := self._changed()) is not None:
                self._load(signature)
            with self._attempted:  # waiters look again (a file gone before its load, too)
                self._attempted.notify_all()
            self._wake.wait(self.check_seconds)

    def _load(self, signature: Signature) -> None:
        started = time.perf_counter()
        try:
            classifier = Classifier.load(self.path)
        except Exception as err:  # any broken file must not take the server down
            with self._attempted:
                self._failed = signature
                self._error = str(err)  # names the file, what is wrong and how to get it back
            log.error("%s; still serving %s", self._error, self.version or "no model")
            return
        previous = self.version
        with self._attempted:
            self.classifier, self._signature, self._failed = classifier, signature, None
            self.loaded_at, self._error = time.time(), None
        log.info(
            "serving model %s from %s (was %s), loaded in %.1f s",
            classifier.version,
            self.path,
            previous or "none",
            time.perf_counter() - started,
        )
