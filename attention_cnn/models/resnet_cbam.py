"""``resnet_cbam``: ``resnet`` with CBAM (channel, then spatial attention) in every residual block."""
from __future__ import annotations

import functools

from attention_cnn.models.settings import Count, ResNetSettings

BASELINE = "resnet"  # the report tests this variant against it (None: a baseline)
NOTE = "the small ResNet with CBAM in every residual block"


class Settings(ResNetSettings):
    cbam_ratio: Count = 8
    cbam_kernel_size: Count = 7


def build(input_shape, num_classes, s: Settings, *, sample_rate_hz=None):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention is one extra argument to the backbone (frontend and
    augmentation as in ``resnet``)."""
    from attention_cnn.models import blocks  # here, not at the top: the config reads Settings without loading Keras

    backbone = s.builder_settings()
    ratio, kernel_size = backbone.pop("cbam_ratio"), backbone.pop("cbam_kernel_size")
    return blocks.resnet(input_shape, num_classes, **backbone, sample_rate_hz=sample_rate_hz,
                         attention=functools.partial(blocks.cbam, ratio=ratio, kernel_size=kernel_size),
                         name="resnet_cbam")
