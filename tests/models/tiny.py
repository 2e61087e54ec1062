"""A user's model builders, named in tests as `model._target_=tests.models.tiny.<name>`."""

from __future__ import annotations


def build_model(input_shape, n_classes: int, width: int = 8):
    """Conv, pooling, a named embedding, softmax: no dropout layer at all."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, activation="relu")(inputs)
    x = layers.MaxPooling2D(4)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(width, activation="relu", name="embedding")(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_custom")


def build_with_dropout(input_shape, n_classes: int, width: int = 8, rate: float = 0.2):
    """The same with dropout before the softmax, for MC dropout."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, activation="relu")(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(width, activation="relu")(x)
    x = layers.Dropout(rate)(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_dropout")


def not_a_model(input_shape, n_classes: int):
    return "a string"
