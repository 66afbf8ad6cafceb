"""``cnn_attention``: the study's baseline plus its spatial gate after the first conv (174,027 params on 28x28x1)."""
from __future__ import annotations

from attention_cnn.models.settings import Count, StudySettings

BASELINE = "cnn"  # the report tests this variant against it (None: a baseline)
NOTE = ""  # the study's own model: the report's opening paragraph describes it


class Settings(StudySettings):
    gate_kernel_size: Count = 3


def build(input_shape, num_classes, s: Settings):
    """(B, H, W, 1) -> (B, num_classes) softmax; the gate is one extra call."""
    import keras  # here, not at the top: the config reads Settings without loading Keras

    from attention_cnn.models.blocks import spatial_attention_gate, study_head, study_stem

    inputs, x = study_stem(input_shape, filters=s.filters, kernel_size=s.kernel_size)
    x = spatial_attention_gate(x, s.gate_kernel_size)
    outputs = study_head(x, num_classes, pool_size=s.pool_size, dropout=s.dropout, dense_units=s.dense_units)
    return keras.Model(inputs, outputs, name="cnn_attention")
