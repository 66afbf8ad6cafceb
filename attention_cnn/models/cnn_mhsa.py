"""``cnn_mhsa``: the study's baseline plus multi-head self-attention (query, key, value, softmax) after the
first conv, over a pooled copy of the feature map (at most ``max_tokens`` tokens), added back."""
from __future__ import annotations

from attention_cnn.models.settings import Count, StudySettings

BASELINE = "cnn"  # the report tests this variant against it (None: a baseline)
NOTE = ("multi-head self-attention (query, key, value, softmax) over a pooled copy of the first convolution's "
        "feature map, added back")


class Settings(StudySettings):
    heads: Count = 4
    key_dim: Count = 8
    max_tokens: Count = 256


def build(input_shape, num_classes, s: Settings):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention block is one extra call."""
    import keras  # here, not at the top: the config reads Settings without loading Keras

    from attention_cnn.models.blocks import pooled_self_attention, study_head, study_stem

    inputs, x = study_stem(input_shape, filters=s.filters, kernel_size=s.kernel_size)
    x = pooled_self_attention(x, s.heads, s.key_dim, s.max_tokens)
    outputs = study_head(x, num_classes, pool_size=s.pool_size, dropout=s.dropout, dense_units=s.dense_units)
    return keras.Model(inputs, outputs, name="cnn_mhsa")
