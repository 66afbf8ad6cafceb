"""``cnn_se``: the study's baseline plus a squeeze-and-excitation block after the first conv
(174,030 params on 28x28x1)."""
from __future__ import annotations

from attention_cnn.models.settings import Count, StudySettings

BASELINE = "cnn"  # the report tests this variant against it (None: a baseline)
NOTE = "a squeeze-and-excitation block (channel attention) after the first convolution"


class Settings(StudySettings):
    se_ratio: Count = 8    # hidden units = channels // se_ratio


def build(input_shape, num_classes, s: Settings):
    """(B, H, W, 1) -> (B, num_classes) softmax; the SE block (channel attention) is one extra call."""
    import keras  # here, not at the top: the config reads Settings without loading Keras

    from attention_cnn.models.blocks import squeeze_excite, study_head, study_stem

    inputs, x = study_stem(input_shape, filters=s.filters, kernel_size=s.kernel_size)
    x = squeeze_excite(x, s.se_ratio)
    outputs = study_head(x, num_classes, pool_size=s.pool_size, dropout=s.dropout, dense_units=s.dense_units)
    return keras.Model(inputs, outputs, name="cnn_se")
