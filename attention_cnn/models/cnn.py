"""``cnn``: the study's baseline, layer for layer (173,738 params on 28x28x1)."""
from __future__ import annotations

import keras

from attention_cnn.models.blocks import study_head, study_stem


def build(input_shape, num_classes, *, filters=32, kernel_size=3, pool_size=2, dropout=0.2, dense_units=32):
    """(B, H, W, 1) -> (B, num_classes) softmax."""
    inputs, x = study_stem(input_shape, filters=filters, kernel_size=kernel_size)
    outputs = study_head(x, num_classes, pool_size=pool_size, dropout=dropout, dense_units=dense_units)
    return keras.Model(inputs, outputs, name="cnn")
