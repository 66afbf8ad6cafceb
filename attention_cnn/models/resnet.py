"""``resnet``: a small ResNet (stem, 3 residual stages with BatchNorm, global average pooling, dense softmax),
the stronger no-attention baseline for ``resnet_se`` and ``resnet_cbam``."""
from __future__ import annotations

from attention_cnn.models.settings import ResNetSettings

BASELINE = None  # the report tests this variant against it (None: a baseline)
NOTE = ("a small ResNet (3 residual stages with batch normalization, global average pooling): a stronger "
        "baseline without attention")


class Settings(ResNetSettings):
    """``models.resnet``: the backbone's settings, nothing more."""


def build(input_shape, num_classes, s: Settings, *, sample_rate_hz=None):
    """(B, H, W, 1) -> (B, num_classes) softmax; see :func:`attention_cnn.models.blocks.resnet` (``sample_rate_hz``:
    the features' rate, for the logmel frontend)."""
    from attention_cnn.models import blocks  # here, not at the top: the config reads Settings without loading Keras

    return blocks.resnet(input_shape, num_classes, **s.builder_settings(), sample_rate_hz=sample_rate_hz, name="resnet")
