"""``resnet_se``: ``resnet`` with a squeeze-and-excitation block in every residual block (SE-ResNet)."""
from __future__ import annotations

import functools

from attention_cnn.models.settings import Count, ResNetSettings

BASELINE = "resnet"  # the report tests this variant against it (None: a baseline)
NOTE = "the small ResNet with a squeeze-and-excitation block in every residual block"


class Settings(ResNetSettings):
    se_ratio: Count = 8


def build(input_shape, num_classes, s: Settings, *, sample_rate_hz=None):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention is one extra argument to the backbone (frontend and
    augmentation as in ``resnet``)."""
    from attention_cnn.models import blocks  # here, not at the top: the config reads Settings without loading Keras

    backbone = s.builder_settings()
    ratio = backbone.pop("se_ratio")
    return blocks.resnet(input_shape, num_classes, **backbone, sample_rate_hz=sample_rate_hz,
                         attention=functools.partial(blocks.squeeze_excite, ratio=ratio), name="resnet_se")
