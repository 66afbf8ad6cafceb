"""``cnn``: the study's baseline, layer for layer (173,738 params on 28x28x1)."""
from __future__ import annotations

from attention_cnn.models.settings import StudySettings

BASELINE = None  # the report tests this variant against it (None: a baseline)
NOTE = ""  # the study's own model: the report's opening paragraph describes it


class Settings(StudySettings):
    """``models.cnn``: the study's settings, nothing more."""


def build(input_shape, num_classes, s: Settings):
    """(B, H, W, 1) -> (B, num_classes) softmax."""
    import keras  # here, not at the top: the config reads Settings without loading Keras

    from attention_cnn.models.blocks import study_head, study_stem

    inputs, x = study_stem(input_shape, filters=s.filters, kernel_size=s.kernel_size)
    outputs = study_head(x, num_classes, pool_size=s.pool_size, dropout=s.dropout, dense_units=s.dense_units)
    return keras.Model(inputs, outputs, name="cnn")
