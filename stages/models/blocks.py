"""Reusable Keras blocks shared by the variants."""
from __future__ import annotations

import keras
from keras import layers


def spatial_attention_gate(x, kernel_size: int = 3, name: str = "attention"):
    """The study's gate: ``x * sigmoid(Conv2D(1, k, same)(x))``, one weight per position.

    x: (B, H, W, C) -> (B, H, W, C); the (B, H, W, 1) gate broadcasts over channels.
    Adds ``k*k*C + 1`` parameters (289 for k=3, C=32).
    """
    gate = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid", name=f"{name}_map")(x)
    return layers.Multiply(name=f"{name}_apply")([x, gate])


def study_head(x, num_classes: int, *, pool_size: int = 2, dropout: float = 0.2, dense_units: int = 32):
    """MaxPool -> Dropout -> Flatten -> Dense(relu) -> Dense(softmax), as in the study.

    x: (B, H, W, C) -> (B, num_classes) probabilities.
    """
    x = layers.MaxPooling2D(pool_size, name="pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    return layers.Dense(num_classes, activation="softmax", name="probs")(x)


def study_stem(input_shape, *, filters: int = 32, kernel_size: int = 3):
    """Input -> Conv2D(filters, k, valid, relu); returns (inputs, features (B, H-k+1, W-k+1, filters))."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(filters, kernel_size, padding="valid", activation="relu", name="conv")(inputs)
    return inputs, x
