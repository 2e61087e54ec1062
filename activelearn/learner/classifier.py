"""The classifier behind a small protocol: fit, predict_proba, predict_with_features,
evaluate, save, load; with a frozen backbone also backbone_features and
predict_from_features, so the backbone's work can be cached per image.

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
from activelearn.learner import networks, recipe
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


def training_epochs(n_samples: int, cfg: ModelConfig) -> int:
    """Epochs giving at least `cfg.min_steps` optimizer steps and `cfg.min_epochs` epochs."""
    steps_per_epoch = max(1, math.ceil(n_samples / cfg.batch_size))
    return max(cfg.min_epochs, math.ceil(cfg.min_steps / steps_per_epoch))


class Classifier:
    """A trained (or untrained) Keras network with its class names and preprocessing."""

    def __init__(
        self,
        network,
        class_names: list[str],
        prep: Preprocessing,
        version: str,
        features_layer: str | None = None,
        temperature: float = 1.0,
    ):
        self.network = network
        # the softmax temperature every prediction is scaled by (model.calibration_folds)
        self.temperature = float(temperature)
        self.class_names = list(class_names)
        self.prep = prep
        self.version = version
        self.backbone, self.head = networks.backbone_of(network)
        # the diversity strategies' layer: the head's with a backbone, the network's else
        self.features_layer = features_layer or networks.features_layer(
            self.head if self.head is not None else network
        )

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
        network = networks.build_network(len(class_names), prep, cfg)
        layer = None if cfg.kind == "backbone" else cfg.features_layer
        return cls(network, class_names, prep, version, layer)

    @property
    def kind(self) -> str:
        return "backbone" if self.backbone is not None else "network"

    def backbone_key(self) -> str:
        """What the backbone's features depend on: its weights and how pixels reach it.
        The feature cache's key: features are never shared across other weights."""
        if self.backbone is None:
            raise ValueError(f"model {self.network.name!r} has no frozen backbone")
        if getattr(self, "_backbone_key", None) is None:
            digest = networks.weights_digest(self.backbone)
            prep = self.prep
            size = "x".join(map(str, prep.image_size))
            self._backbone_key = f"{digest}-{size}-{prep.channels}-{prep.scaling}"
        return self._backbone_key

    def backbone_features(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The frozen backbone's output for decoded images, [n, backbone features]."""
        import tensorflow as tf

        if getattr(self, "_backbone_fn", None) is None:
            spec = tf.TensorSpec([None, *self.prep.input_shape], tf.float32)
            self._backbone_fn = tf.function(
                lambda x: self.backbone(x, training=False), input_signature=[spec]
            )
        out = [
            self._backbone_fn(np.asarray(x[i : i + batch_size], np.float32)).numpy()
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.n_backbone_features), np.float32)

    @property
    def n_backbone_features(self) -> int:
        return int(self.backbone.output.shape[-1])

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        cfg: ModelConfig,
        seed: int,
        features: np.ndarray | None = None,
        warm_from: list[np.ndarray] | None = None,
    ) -> list[dict]:
        """Train from scratch on (x, y); returns the history at up to HISTORY_POINTS points.

        With a frozen backbone only the head trains, on `features` (the backbone's output
        for x, from the feature cache) or on features computed here; with
        `cfg.finetune_layers` > 0 the top of the backbone then trains too, on the pixels,
        at a tenth of the learning rate. `warm_from` (the last round's weights, with
        `cfg.warm_start`) is where training starts when its shapes fit this network.
        With `cfg.calibration_folds` > 1 the softmax temperature is then fitted on
        out-of-fold predictions of (x, y).
        """
        if len(y) == 0:
            raise ValueError("no labeled images to train on: add images to the labeled folder")
        if warm_from is not None and cfg.warm_start:
            self.warm_start(warm_from)
        if self.backbone is None:
            history = self._train(self.network, x, y, cfg, seed, cfg.learning_rate, pixels=True)
        else:
            if features is None:
                features = self.backbone_features(x)
            history = self._train(self.head, features, y, cfg, seed, cfg.learning_rate)
            if cfg.finetune_layers > 0:
                networks.unfreeze_top(self.backbone, cfg.finetune_layers)
                history += self._train(
                    self.network, x, y, cfg, seed, cfg.learning_rate / 10, pixels=True
                )
                self.backbone.trainable = False  # the weights changed: later keys differ
                self._backbone_key = self._cached_passes = self._head_passes = None
        self.temperature = 1.0
        if cfg.calibration_folds > 1 and len(y) >= 2 * cfg.calibration_folds:
            self.temperature = self._calibrate(x, y, cfg, seed, features)
        return history

    def warm_start(self, weights: list[np.ndarray]) -> bool:
        """Start from `weights` (another network's of the same build); False, and the
        fresh weights kept, when they do not fit (another number of classes, layers)."""
        own = self.network.get_weights()
        if len(own) != len(weights) or any(
            a.shape != b.shape for a, b in zip(own, weights, strict=True)
        ):
            log.warning("warm start skipped: the last round's network has another shape")
            return False
        self.network.set_weights(weights)
        return True

    def _calibrate(self, x, y, cfg: ModelConfig, seed: int, features) -> float:
        """The temperature fitted on out-of-fold predictions of the labeled set: each fold
        is predicted by a network of the same build trained with the same recipe on the
        other folds (from scratch; with a backbone, a head on its features). The test set
        is never touched."""
        import keras

        inputs = x if self.backbone is None else features
        oof = np.zeros((len(y), len(self.class_names)), np.float32)
        for i, held in enumerate(recipe.folds(y, cfg.calibration_folds, seed)):
            rest = np.setdiff1d(np.arange(len(y)), held)
            fold_seed = seed + 7919 * (i + 1)
            keras.utils.set_random_seed(fold_seed)
            if self.backbone is None:
                model = networks.build_network(len(self.class_names), self.prep, cfg)
            else:
                model = networks.build_head(inputs.shape[-1], len(self.class_names), cfg)
            self._train(
                model,
                inputs[rest],
                y[rest],
                cfg,
                fold_seed,
                cfg.learning_rate,
                pixels=self.backbone is None,
            )
            oof[held] = np.asarray(model.predict_on_batch(inputs[held]))
        temperature = recipe.fit_temperature(oof, y)
        log.info("temperature %.3f from %d folds", temperature, cfg.calibration_folds)
        return temperature

    def _train(
        self, model, x, y, cfg: ModelConfig, seed: int, learning_rate: float, pixels=False
    ) -> list:
        """The project's recipe: Adam, at least `min_steps` steps and `min_epochs` epochs.

        The data are shuffled and repeated as one stream, so a tiny labeled set gets its
        floor of optimizer steps without paying Keras's per-epoch overhead each time.
        The recipe's options (`recipe`) shape the stream and the optimizer; augmentation
        applies to `pixels` only (not to a head trained on backbone features).
        """
        import keras

        keras.utils.set_random_seed(seed)
        epochs = training_epochs(len(x), cfg)
        total_steps = epochs * math.ceil(len(x) / cfg.batch_size)
        model.compile(
            optimizer=recipe.optimizer(cfg, learning_rate, total_steps),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        points = min(HISTORY_POINTS, total_steps)
        steps_per_point = math.ceil(total_steps / points)
        augment = recipe.augmentation(cfg.augment, self.prep, seed) if pixels else None
        if cfg.augment.enabled and not pixels:
            log.info("model.augment: not applied to a head trained on backbone features")
        stream = recipe.training_stream(x, y, cfg, seed, augment)
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
            history = model.fit(
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

    def predict_proba(
        self, x: np.ndarray, batch_size: int = 256, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities, shape [n, classes], scaled by the model's temperature
        unless `calibrated` is False."""
        if len(x) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        if len(x) <= batch_size:  # one batch: skip predict()'s per-call set-up (~150 ms)
            probas = np.asarray(self.network.predict_on_batch(x))
        else:
            probas = np.asarray(self.network.predict(x, batch_size=batch_size, verbose=0))
        return recipe.with_temperature(probas, self.temperature) if calibrated else probas

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
        if self.backbone is not None:
            return self.predict_from_features(self.backbone_features(x), mc_samples, seed)
        return self._predict(self._passes(), x, mc_samples, seed)

    def predict_from_features(
        self, features: np.ndarray, mc_samples: int = 0, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`predict_with_features` from the backbone's features (cached) instead of pixels."""
        if getattr(self, "_head_passes", None) is None:
            self._head_passes = _Passes(self.head, self.features_layer)
        return self._predict(self._head_passes, features, mc_samples, seed)

    def logits_from_features(self, features: np.ndarray) -> np.ndarray | None:
        """The logits (the softmax's input, over the temperature) of rows of the features
        layer's output, [n, classes]; None when the softmax does not read that layer."""
        weights = networks.softmax_weights(
            self.head if self.head is not None else self.network, self.features_layer
        )
        if weights is None:
            return None
        kernel, bias = weights
        return (np.asarray(features, np.float32) @ kernel + bias) / self.temperature

    def _predict(self, passes, x, mc_samples, seed):
        x = np.asarray(x, np.float32)
        t = self.temperature
        if mc_samples <= 0:
            features, probas = passes.deterministic(x)
            return recipe.with_temperature(probas.numpy(), t), features.numpy()
        hidden = passes.head(x)
        features, _ = passes.deterministic_tail(hidden)
        if seed is not None:
            passes.reseed(seed)
        samples = [passes.stochastic_tail(hidden) for _ in range(mc_samples)]
        stacked = np.stack([p.numpy() for p in samples], axis=-1)
        return recipe.with_temperature(stacked, t), features.numpy()

    def _passes(self) -> _Passes:
        if getattr(self, "_cached_passes", None) is None:
            self._cached_passes = _Passes(self.network, self.features_layer)
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
        metadata = {
            "class_names": self.class_names,
            "preprocessing": self.prep.to_dict(),
            "features_layer": self.features_layer,
            "temperature": self.temperature,
        }
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
            meta.get("features_layer"),  # None in models saved before it was recorded
            meta.get("temperature", 1.0),  # 1 in models saved before calibration
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
    """Compiled forward passes of a network: deterministic (features and probabilities),
    and for MC dropout the part before its first dropout once, the rest T times."""

    def __init__(self, network, features_layer: str):
        import keras
        import tensorflow as tf

        self.network, self.features_layer = network, features_layer
        features = network.get_layer(features_layer).output
        deterministic = keras.Model(network.inputs, [features, network.output])
        self.deterministic = self.traced_once(
            lambda x: deterministic(x, training=False), network.inputs[0].shape, tf
        )
        self._mc_built = False

    @staticmethod
    def traced_once(fn, shape, tf):  # any batch size: one trace, not one per size
        return tf.function(fn, input_signature=[tf.TensorSpec([None, *shape[1:]], tf.float32)])

    def __getattr__(self, name: str):  # the MC passes, built when first asked for
        if name in ("head", "deterministic_tail", "stochastic_tail", "dropouts"):
            if not self.__dict__.get("_mc_built"):
                self._build_mc()
                return getattr(self, name)
        raise AttributeError(name)

    def _build_mc(self) -> None:
        """Split a chain-shaped network at its first dropout."""
        import keras
        import tensorflow as tf

        network = self.network
        layers = network.layers
        first = next(
            (i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Dropout)),
            None,
        )
        if first is None:
            raise ValueError(
                f"model {network.name!r} has no dropout layer, so MC dropout has nothing to "
                "sample: set strategy.mc_samples=0, or add Dropout layers to the model"
            )
        head = keras.Model(network.inputs, layers[first].input)
        tail = layers[first:]
        if any(isinstance(layer, keras.layers.BatchNormalization) for layer in tail):
            raise ValueError("MC dropout needs a tail without batch normalization")
        hidden_in = keras.Input(shape=head.output.shape[1:])
        hidden, feature_out = hidden_in, None
        try:
            for layer in tail:
                hidden = layer(hidden)
                if layer.name == self.features_layer:
                    feature_out = hidden
        except Exception as err:  # a layer taking two inputs: not a chain
            raise ValueError(
                f"model {network.name!r}: MC dropout needs the layers from the first dropout "
                f"on to form a chain ({err}); set strategy.mc_samples=0"
            ) from err
        if feature_out is None:  # the features layer comes before the first dropout
            feature_out = hidden_in
        tail_model = keras.Model(hidden_in, [feature_out, hidden])

        self.dropouts = [layer for layer in tail if isinstance(layer, keras.layers.Dropout)]
        self.head = self.traced_once(lambda x: head(x, training=False), network.inputs[0].shape, tf)
        shape = tail_model.inputs[0].shape
        self.deterministic_tail = self.traced_once(
            lambda h: tail_model(h, training=False), shape, tf
        )
        # training=True switches dropout on; the tail has nothing else that it changes.
        self.stochastic_tail = self.traced_once(
            lambda h: tail_model(h, training=True)[1], shape, tf
        )
        self._mc_built = True

    def reseed(self, seed: int) -> None:
        """Start every dropout layer's random stream at `seed` (each its own)."""
        for i, layer in enumerate(self.dropouts):
            state = layer.seed_generator.state
            state.assign(np.array([(seed + i) % 2**31, 0], dtype=state.dtype))
