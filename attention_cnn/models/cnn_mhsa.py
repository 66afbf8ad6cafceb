"""``cnn_mhsa``: the study's baseline plus multi-head self-attention (query, key, value, softmax) after the
first conv, over a pooled copy of the feature map (at most ``max_tokens`` tokens), added back."""
from __future__ import annotations

import keras

from attention_cnn.models.blocks import pooled_self_attention, study_head, study_stem


def build(input_shape, num_classes, *, filters=32, kernel_size=3, heads=4, key_dim=8, max_tokens=256, pool_size=2,
          dropout=0.2, dense_units=32):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention block is one extra call."""
    inputs, x = study_stem(input_shape, filters=filters, kernel_size=kernel_size)
    x = pooled_self_attention(x, heads, key_dim, max_tokens)
    outputs = study_head(x, num_classes, pool_size=pool_size, dropout=dropout, dense_units=dense_units)
    return keras.Model(inputs, outputs, name="cnn_mhsa")
