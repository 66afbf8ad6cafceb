"""``resnet``: a small ResNet (stem, 3 residual stages with BatchNorm, global average pooling, dense softmax),
the stronger no-attention baseline for ``resnet_se`` and ``resnet_cbam``."""
from __future__ import annotations

from attention_cnn.models import blocks


def build(input_shape, num_classes, *, filters=16, blocks_per_stage=2, stem_strides=2, dropout=0.0, frontend="linear",
          mel_bins=64, sample_rate_hz=8000, time_pool=1, augment="none"):
    """(B, H, W, 1) -> (B, num_classes) softmax; see :func:`attention_cnn.models.blocks.resnet` (``frontend``: linear |
    logmel with ``mel_bins``, ``sample_rate_hz``, ``time_pool``; ``augment``: none | digits | specaugment | auto)."""
    return blocks.resnet(input_shape, num_classes, filters=filters, blocks_per_stage=blocks_per_stage,
                         stem_strides=stem_strides, dropout=dropout, frontend=frontend, mel_bins=mel_bins,
                         sample_rate_hz=sample_rate_hz, time_pool=time_pool, augment=augment, name="resnet")
