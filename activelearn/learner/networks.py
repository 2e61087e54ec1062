"""The three kinds of network a campaign trains (`model.kind`): the project's small CNN,
a frozen `keras.applications` backbone with a trained head, and your own model built by a
function named in the config. All three end in a softmax over the classes; each has a
features layer the diversity strategies read (named `features`, or `model.features_layer`,
or the penultimate layer).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from activelearn.config import ModelConfig
from activelearn.data.images import Preprocessing
from activelearn.errors import ConfigError

log = logging.getLogger(__name__)

BACKBONE_LAYER = "backbone"  # the frozen feature extractor, one nested layer of the network
HEAD_LAYER = "head"  # what is trained on the backbone's features, the other nested layer
FEATURES_LAYER = "features"  # the layer the diversity strategies read, unless named otherwise


def build_network(n_classes: int, prep: Preprocessing, cfg: ModelConfig):
    """The network `cfg.kind` asks for, untrained (a backbone with its pretrained weights)."""
    builders = {"cnn": build_cnn, "backbone": build_backbone_network, "custom": build_custom}
    return builders[str(cfg.kind)](n_classes, prep, cfg)


def build_cnn(n_classes: int, prep: Preprocessing, cfg: ModelConfig):
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
    x = layers.Dense(cfg.dense_units, activation="relu", name=FEATURES_LAYER)(x)
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=cfg.name)


def backbone(prep: Preprocessing, cfg: ModelConfig):
    """The keras.applications network `cfg.backbone`, without its top, average-pooled,
    frozen; weights from ImageNet (Keras downloads them once to ~/.keras/models), a local
    file, or random (`weights: null`)."""
    import keras

    build = getattr(keras.applications, cfg.backbone, None)
    if build is None or not callable(build):
        raise ConfigError(
            f"model.backbone={cfg.backbone}: not a keras.applications network; use e.g. "
            "MobileNetV3Small, EfficientNetV2B0 or ResNet50"
        )
    weights = cfg.weights
    if weights not in (None, "imagenet"):
        from pathlib import Path

        if not Path(weights).is_file():
            raise ConfigError(
                f"model.weights={weights}: no such file; give a weights file saved from "
                f"{cfg.backbone} without its top (include_top=False), `imagenet`, or null"
            )
    kwargs = {}
    if cfg.backbone.startswith(("MobileNetV3", "EfficientNetV2", "ConvNeXt", "RegNet")):
        kwargs["include_preprocessing"] = True  # these take pixels in [0, 255]
    try:
        network = build(
            input_shape=prep.input_shape,
            include_top=False,
            weights=weights,
            pooling="avg",
            **kwargs,
        )
    except OSError as err:  # no network to fetch imagenet weights from
        raise ConfigError(
            f"model.weights={weights}: could not load them ({err}); on a machine without "
            "internet, copy the weights file (~/.keras/models/ of a machine that has it) "
            "and set model.weights to its path"
        ) from err
    # One name whatever the network, so it is found again in a saved model.
    network = keras.Model(network.input, network.output, name=BACKBONE_LAYER)
    network.trainable = False
    return network


def build_backbone_network(n_classes: int, prep: Preprocessing, cfg: ModelConfig):
    """Two nested models in one: the frozen backbone, then the head (dropout, a dense
    feature layer, dropout, softmax), which trains on cached backbone features alone."""
    import keras

    extractor = backbone(prep, cfg)
    inputs = keras.Input(shape=prep.input_shape, name="image")
    features = extractor(inputs, training=False)  # its batch norm stays frozen too
    outputs = build_head(extractor.output.shape[-1], n_classes, cfg)(features)
    return keras.Model(inputs, outputs, name=cfg.name)


def build_head(n_features: int, n_classes: int, cfg: ModelConfig):
    import keras
    from keras import layers

    inputs = keras.Input(shape=(n_features,), name="backbone_features")
    x = layers.Dropout(cfg.dropout)(inputs)
    x = layers.Dense(cfg.dense_units, activation="relu", name=FEATURES_LAYER)(x)
    x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=HEAD_LAYER)


def build_custom(n_classes: int, prep: Preprocessing, cfg: ModelConfig):
    """Your model: `hydra.utils.instantiate` calls `model._target_` with `input_shape`,
    `n_classes` and `model.params`; it must return an uncompiled Keras model ending in a
    softmax over `n_classes`."""
    import keras
    from hydra.utils import instantiate

    if not cfg._target_:
        raise ConfigError(
            "model=custom needs model._target_: the dotted name of a function "
            "(input_shape, n_classes, ...) returning an uncompiled Keras model"
        )
    try:
        network = instantiate(
            {"_target_": cfg._target_, **cfg.params},
            input_shape=prep.input_shape,
            n_classes=n_classes,
        )
    except Exception as err:  # an import error, a wrong argument: Hydra wraps them all
        raise ConfigError(
            f"model._target_={cfg._target_}: could not build the model ({err})"
        ) from err
    if not isinstance(network, keras.Model):
        raise ConfigError(
            f"model._target_={cfg._target_} returned {type(network).__name__}, not a Keras model"
        )
    shape = tuple(network.output.shape[1:])
    if shape != (n_classes,):
        raise ConfigError(
            f"model._target_={cfg._target_}: output shape {shape}, expected ({n_classes},) "
            "class probabilities (end with Dense(n_classes, activation='softmax'))"
        )
    features_layer(network, cfg.features_layer)  # a wrong name fails now, not at scoring
    return network


def features_layer(network, name: str | None = None) -> str:
    """The name of the layer the diversity strategies read: `name` when given, else one
    named `features`, else the penultimate layer (the one feeding the softmax)."""
    names = [layer.name for layer in network.layers]
    if name:
        if name not in names:
            raise ConfigError(
                f"model.features_layer={name}: no such layer in {network.name!r}; "
                f"it has {names[-6:]} (last six)"
            )
        return name
    if FEATURES_LAYER in names:
        return FEATURES_LAYER
    return _penultimate(network)


def _penultimate(network) -> str:
    """The layer whose output feeds the last layer (skipping a trailing activation)."""
    last = network.layers[-1]
    inbound = last._inbound_nodes[0].input_tensors if last._inbound_nodes else []
    if len(inbound) == 1:
        return inbound[0]._keras_history.operation.name
    return network.layers[-2].name


def softmax_weights(network, features_layer: str):
    """(kernel, bias) of the last layer when it is a softmax Dense reading `features_layer`
    directly (dropout between is fine: it is off at inference), so that
    `features @ kernel + bias` are the logits; None for any other shape."""
    import keras

    last = network.layers[-1]
    if not isinstance(last, keras.layers.Dense) or last.activation is not keras.activations.softmax:
        return None
    layer = last
    while True:
        inbound = layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else []
        if len(inbound) != 1:
            return None
        layer = inbound[0]._keras_history.operation
        if layer.name == features_layer:
            kernel, bias = last.get_weights()
            return np.asarray(kernel), np.asarray(bias)
        if not isinstance(layer, keras.layers.Dropout):
            return None


def backbone_of(network):
    """(backbone, head) of a `kind: backbone` network, or (None, None)."""
    names = {layer.name for layer in network.layers}
    if {BACKBONE_LAYER, HEAD_LAYER} <= names:
        return network.get_layer(BACKBONE_LAYER), network.get_layer(HEAD_LAYER)
    return None, None


def weights_digest(layer) -> str:
    """A digest of a layer's weights: what makes two backbones compute the same features
    (the feature cache's key), whatever file or seed they came from."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(layer.name.encode())
    for weight in layer.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def unfreeze_top(backbone_layer, n: int) -> int:
    """Make the top `n` weighted layers of the backbone trainable (batch norm stays
    frozen, as Keras's fine-tuning guide advises); returns how many were unfrozen."""
    import keras

    backbone_layer.trainable = True
    weighted = [layer for layer in backbone_layer.layers if layer.weights]
    for layer in weighted[:-n] if n < len(weighted) else []:
        layer.trainable = False
    unfrozen = 0
    for layer in weighted[-n:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        else:
            unfrozen += 1
    log.info("fine-tuning the top %d layers of %s", unfrozen, backbone_layer.name)
    return unfrozen
