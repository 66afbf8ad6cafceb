"""``cnn_cbam``: the study's baseline plus CBAM (channel, then spatial attention) after the first conv."""
from __future__ import annotations

from attention_cnn.models.settings import Count, StudySettings

BASELINE = "cnn"  # the report tests this variant against it (None: a baseline)
NOTE = "CBAM (channel, then spatial attention) after the first convolution"


class Settings(StudySettings):
    cbam_ratio: Count = 8
    cbam_kernel_size: Count = 7    # spatial attention conv


def build(input_shape, num_classes, s: Settings):
    """(B, H, W, 1) -> (B, num_classes) softmax; CBAM is one extra call."""
    import keras  # here, not at the top: the config reads Settings without loading Keras

    from attention_cnn.models.blocks import cbam, study_head, study_stem

    inputs, x = study_stem(input_shape, filters=s.filters, kernel_size=s.kernel_size)
    x = cbam(x, s.cbam_ratio, s.cbam_kernel_size)
    outputs = study_head(x, num_classes, pool_size=s.pool_size, dropout=s.dropout, dense_units=s.dense_units)
    return keras.Model(inputs, outputs, name="cnn_cbam")
