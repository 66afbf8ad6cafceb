"""``resnet_cbam``: ``resnet`` with CBAM (channel, then spatial attention) in every residual block."""
from __future__ import annotations

import functools

from stages.models import blocks


def build(input_shape, num_classes, *, filters=16, blocks_per_stage=2, stem_strides=2, dropout=0.0, cbam_ratio=8,
          cbam_kernel_size=7):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention is one extra argument to the backbone."""
    return blocks.resnet(input_shape, num_classes, filters=filters, blocks_per_stage=blocks_per_stage,
                         stem_strides=stem_strides, dropout=dropout,
                         attention=functools.partial(blocks.cbam, ratio=cbam_ratio, kernel_size=cbam_kernel_size),
                         name="resnet_cbam")
