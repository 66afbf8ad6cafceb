"""``resnet_cbam``: ``resnet`` with CBAM (channel, then spatial attention) in every residual block."""
from __future__ import annotations

import functools

from attention_cnn.models import blocks


def build(input_shape, num_classes, *, filters=16, blocks_per_stage=2, stem_strides=2, dropout=0.0, cbam_ratio=8,
          cbam_kernel_size=7, frontend="linear", mel_bins=64, sample_rate_hz=8000, time_pool=1, augment="none"):
    """(B, H, W, 1) -> (B, num_classes) softmax; the attention is one extra argument to the backbone (frontend and
    augmentation as in ``resnet``)."""
    return blocks.resnet(input_shape, num_classes, filters=filters, blocks_per_stage=blocks_per_stage,
                         stem_strides=stem_strides, dropout=dropout,
                         attention=functools.partial(blocks.cbam, ratio=cbam_ratio, kernel_size=cbam_kernel_size),
                         frontend=frontend, mel_bins=mel_bins, sample_rate_hz=sample_rate_hz, time_pool=time_pool,
                         augment=augment, name="resnet_cbam")
