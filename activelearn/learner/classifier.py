"""The classifier behind a small protocol: fit, predict_proba, predict_with_features,
evaluate, save, load.

This is the one module that imports TensorFlow for training; everything else in the
package, the DVC stages and the serving app included, goes through `Classifier`.
A saved model is a BentoML model (Keras file plus class names and preprocessing in its
metadata) exported to a single `.bentomodel` file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from activelearn.config import ModelConfig
from activelearn.data.images import Preprocessing
from activelearn.errors import UnreadableModel
from activelearn.learner.metrics import classification_report

log = logging.getLogger(__name__)


BENTO_NAME = "classifier"
KERAS_FILE = "model.keras"


HISTORY_POINTS = 20  # training-history rows logged per fit


def _bentoml():
    """bentoml and the model store of the current directory.

    The store is only where a model passes on its way to or from its `.bentomodel` file,
    which is the truth. It is `.bentoml/` in the current directory (a round runs in its
    workspace), or BENTOML_HOME when that is set, looked up on every call: the campaigns
    of a Hydra multirun share one process, and each keeps its models in its own workspace.
    """
    import bentoml
    from bentoml._internal.models import ModelStore  # the `_model_store` of bentoml.models

    models = Path(os.environ.get("BENTOML_HOME") or ".bentoml").resolve() / "models"
    models.mkdir(parents=True, exist_ok=True)
    return bentoml, ModelStore(str(models))


def build_network(n_classes: int, prep: Preprocessing, cfg: ModelConfig):
    """A small CNN: conv blocks, then a dense feature layer, then softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=prep.input_shape, name="image")
    x = inputs
    for filters in cfg.filters:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(cfg.dropout)(x)
    x = layers.Dense(cfg.dense_units, activation="relu", name="features")(x)
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=cfg.name)


def training_epochs(n_samples: int, cfg: ModelConfig) -> int:
    """Epochs giving at least `cfg.min_steps` optimizer steps and `cfg.min_epochs` epochs."""
    steps_per_epoch = max(1, math.ceil(n_samples / cfg.batch_size))
    return max(cfg.min_epochs, math.ceil(cfg.min_steps / steps_per_epoch))


class Classifier:
    """A trained (or untrained) Keras network with its class names and preprocessing."""

    def __init__(self, network, class_names: list[str], prep: Preprocessing, version: str):
        self.network = network
        self.class_names = list(class_names)
        self.prep = prep
        self.version = version

    @classmethod
    def build(
        cls,
        class_names: list[str],
        prep: Preprocessing,
        cfg: ModelConfig,
        seed: int,
        version: str = "dev",
    ) -> Classifier:
        import keras

        keras.utils.set_random_seed(seed)
        return cls(build_network(len(class_names), prep, cfg), class_names, prep, version)

    def fit(self, x: np.ndarray, y: np.ndarray, cfg: ModelConfig, seed: int) -> list[dict]:
        """Train from scratch on (x, y); returns the history at up to HISTORY_POINTS points.

        The data are shuffled and repeated as one stream, so a tiny labeled set gets its
        floor of optimizer steps without paying Keras's per-epoch overhead each time.
        """
        import keras
        import tensorflow as tf

        if len(x) == 0:
            raise ValueError("no labeled images to train on: add images to the labeled folder")
        keras.utils.set_random_seed(seed)
        self.network.compile(
            optimizer=keras.optimizers.Adam(cfg.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        epochs = training_epochs(len(x), cfg)
        total_steps = epochs * math.ceil(len(x) / cfg.batch_size)
        points = min(HISTORY_POINTS, total_steps)
        steps_per_point = math.ceil(total_steps / points)
        stream = (
            tf.data.Dataset.from_tensor_slices((x, y))
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(cfg.batch_size)
            .prefetch(2)
        )
        log.info("training on %d images: %d epochs, %d steps", len(x), epochs, total_steps)
        started, clock = time.perf_counter(), []

        def point_done(*_) -> None:
            clock.append(time.perf_counter() - started)
            progress.update(steps_per_point)

        with (
            tqdm(
                total=points * steps_per_point, desc="training", unit="step", disable=None
            ) as progress,
            _custom_gradients_dropped(),
        ):
            history = self.network.fit(
                stream,
                epochs=points,
                steps_per_epoch=steps_per_point,
                shuffle=False,
                verbose=0,
                callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=point_done)],
            )
        return [
            {
                "step": (i + 1) * steps_per_point,
                **{k: float(v[i]) for k, v in history.history.items()},
                "seconds": round(clock[i], 3),
            }
            for i in range(points)
        ]

    def predict_proba(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities, shape [n, classes]."""
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        if len(x) <= batch_size:  # one batch: skip predict()'s per-call set-up (~150 ms)
            return np.asarray(self.network.predict_on_batch(x))
        return np.asarray(self.network.predict(x, batch_size=batch_size, verbose=0))

    def predict_with_features(
        self, x: np.ndarray, mc_samples: int = 0, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and penultimate-layer features of one batch.

        Probabilities are [n, classes], or [n, classes, T] with `mc_samples` = T > 0:
        T Monte-Carlo dropout passes in which the layers before the first dropout run
        once and only the rest runs T times (the same distribution as T full passes with
        dropout on, for a fraction of the cost when the convolutions come first).
        `seed` fixes the dropout masks: the same batch and seed give the same samples in
        any process (a rerun, a Ray actor).
        """
        passes = self._passes()
        x = np.asarray(x, np.float32)
        if mc_samples <= 0:
            features, probas = passes.deterministic(x)
            return probas.numpy(), features.numpy()
        hidden = passes.head(x)
        features, _ = passes.deterministic_tail(hidden)
        if seed is not None:
            passes.reseed(seed)
        samples = [passes.stochastic_tail(hidden) for _ in range(mc_samples)]
        return np.stack([p.numpy() for p in samples], axis=-1), features.numpy()

    def _passes(self) -> _Passes:
        if getattr(self, "_cached_passes", None) is None:
            self._cached_passes = _Passes(self.network)
        return self._cached_passes

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix."""
        return classification_report(y, self.predict_proba(x).argmax(axis=1), self.class_names)

    def save(self, path: str | Path) -> str:
        """Save as a BentoML model tagged `classifier:<version>` and export it to `path`."""
        bentoml, store = _bentoml()
        tag = f"{BENTO_NAME}:{self.version}"
        try:
            bentoml.models.delete(tag, _model_store=store)  # retraining replaces its model
        except bentoml.exceptions.NotFound:
            pass
        metadata = {"class_names": self.class_names, "preprocessing": self.prep.to_dict()}
        with bentoml.models.create(
            tag, labels={"framework": "keras"}, metadata=metadata, _model_store=store
        ) as bento_model:
            self.network.save(bento_model.path_of(KERAS_FILE))
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        _export(Path(store.get(tag).path), partial)
        partial.replace(path)  # readers (the serving app) never see half a file
        _remember(_content(path), self)
        return tag

    @classmethod
    def load(cls, path: str | Path) -> Classifier:
        """Load an exported `.bentomodel` file; the file, not the local store, is the truth."""
        import keras

        bentoml, store = _bentoml()
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no model at {path}: train one first (dvc repro)")
        content = _content(path)
        if (known := _IN_MEMORY.get(content)) is not None:
            return known
        try:
            bento_model = _import(bentoml, store, path)
            meta = bento_model.info.metadata
            network = keras.models.load_model(bento_model.path_of(KERAS_FILE))
        except Exception as err:  # truncated, garbage, or not one of ours
            raise UnreadableModel(
                f"{path}: not a readable model ({type(err).__name__}: {err}); bring it back "
                "with `dvc checkout`, or retrain with `dvc repro -f train`"
            ) from err
        classifier = cls(
            network,
            meta["class_names"],
            Preprocessing.from_dict(meta["preprocessing"]),
            bento_model.tag.version,
        )
        if _content(path) == content:  # not replaced while it was read
            _remember(content, classifier)
        return classifier


@contextlib.contextmanager
def _custom_gradients_dropped() -> Iterator[None]:
    """Unregister the custom gradients TensorFlow registers while tracing inside.

    Tracing a custom-gradient op (Keras's all-reduce of the gradients in every training
    step is one) registers its gradient function in a global registry that is never
    emptied, and the function holds the traced graph: each fit would keep its training
    graph for the life of the process, ~10 MB a round (tensorflow/tensorflow#80895).
    A step takes its gradients while it is traced: nothing looks them up after fit.
    """
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry
    before = set(registry)
    try:
        yield
    finally:
        for name in set(registry) - before:
            if name.startswith("CustomGradient-"):
                del registry[name]


def _export(model_dir: Path, path: Path) -> None:
    """A BentoML model's folder as `path`, the xz tarball that `bentoml models import`
    reads, as `bentoml models export` writes it but at xz's fastest preset: trained weights
    hardly compress (1.86 MB to 1.66 MB for the digits CNN), and the default preset takes
    0.8 s a round to find that out, preset 0 0.4 s."""
    with tarfile.open(path, "w:xz", preset=0) as tar:
        tar.add(model_dir, arcname=".")


def _import(bentoml, store, path: Path):
    """The `.bentomodel` file into the store, replacing a model of the same tag there."""
    try:
        return bentoml.models.import_model(str(path), _model_store=store)
    except bentoml.exceptions.BentoMLException as err:
        tag = str(err).split("'")[1] if "already exists" in str(err) and "'" in str(err) else None
        if tag is None:
            raise
        bentoml.models.delete(tag, _model_store=store)
        return bentoml.models.import_model(str(path), _model_store=store)


# The model this process last saved or loaded, by the hash of its file: a round's train
# stage saves it, and evaluate and select use it without reading it back, though DVC has
# put a copy of the file in its place meanwhile (its cache's), with another inode.
_IN_MEMORY: dict[str, Classifier] = {}


def _content(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _remember(content: str, classifier: Classifier) -> None:
    _IN_MEMORY.clear()
    _IN_MEMORY[content] = classifier


class _Passes:
    """Compiled forward passes of a chain-shaped network, split at its first dropout."""

    def __init__(self, network):
        import keras
        import tensorflow as tf

        layers = network.layers
        first = next(
            (i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Dropout)),
            None,
        )
        if first is None:
            raise ValueError(f"model {network.name!r} has no dropout layer for MC dropout")
        features = network.get_layer("features").output
        deterministic = keras.Model(network.inputs, [features, network.output])
        head = keras.Model(network.inputs, layers[first].input)

        tail = layers[first:]
        if any(isinstance(layer, keras.layers.BatchNormalization) for layer in tail):
            raise ValueError("MC dropout needs a tail without batch normalization")
        hidden_in = keras.Input(shape=head.output.shape[1:])
        hidden = hidden_in
        for layer in tail:
            hidden = layer(hidden)
            if layer.name == "features":
                feature_out = hidden
        tail_model = keras.Model(hidden_in, [feature_out, hidden])

        self.dropouts = [layer for layer in tail if isinstance(layer, keras.layers.Dropout)]

        def traced_once(fn, model):  # any batch size: one trace, not one per size
            spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
            return tf.function(fn, input_signature=[spec])

        self.deterministic = traced_once(lambda x: deterministic(x, training=False), network)
        self.head = traced_once(lambda x: head(x, training=False), network)
        self.deterministic_tail = traced_once(lambda h: tail_model(h, training=False), tail_model)
        # training=True switches dropout on; the tail has nothing else that it changes.
        self.stochastic_tail = traced_once(lambda h: tail_model(h, training=True)[1], tail_model)

    def reseed(self, seed: int) -> None:
        """Start every dropout layer's random stream at `seed` (each its own)."""
        for i, layer in enumerate(self.dropouts):
            state = layer.seed_generator.state
            state.assign(np.array([(seed + i) % 2**31, 0], dtype=state.dtype))
