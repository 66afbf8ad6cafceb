"""``resnet_se``: ``resnet`` with a squeeze-and-excitation block in every residual block (SE-ResNet)."""
from __future__ import annotations

import functools

from stages.models import blocks


def build(input_shape, num_classes, *, filters=16, blocks_per_stage=2, stem_strides=2, dropout=0.0, se_ratio=8):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention is one extra argument to the backbone."""
    return blocks.resnet(input_shape, num_classes, filters=filters, blocks_per_stage=blocks_per_stage,
                         stem_strides=stem_strides, dropout=dropout,
                         attention=functools.partial(blocks.squeeze_excite, ratio=se_ratio), name="resnet_se")
