"""``cnn_cbam``: the study's baseline plus CBAM (channel, then spatial attention) after the first conv."""
from __future__ import annotations

import keras

from attention_cnn.models.blocks import cbam, study_head, study_stem


def build(input_shape, num_classes, *, filters=32, kernel_size=3, cbam_ratio=8, cbam_kernel_size=7, pool_size=2,
          dropout=0.2, dense_units=32):
    """(B, H, W, 1) -> (B, num_classes) softmax; CBAM is one extra call."""
    inputs, x = study_stem(input_shape, filters=filters, kernel_size=kernel_size)
    x = cbam(x, cbam_ratio, cbam_kernel_size)
    outputs = study_head(x, num_classes, pool_size=pool_size, dropout=dropout, dense_units=dense_units)
    return keras.Model(inputs, outputs, name="cnn_cbam")
