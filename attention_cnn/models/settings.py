"""The typed settings of the model variants: ``models.<variant>`` in params.yaml.

Each variant module declares ``class Settings`` (a subclass of one below) next to its ``build``; the
registry (:mod:`attention_cnn.models`) exposes it and :mod:`attention_cnn.config` validates the params
section against it. A default lives here or in the variant's ``Settings``, nowhere else.
Importing this module does not load Keras (the config is validated before any work).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class VariantSettings(BaseModel):
    """What every variant accepts: the training keys, read by the train stage rather than by ``build``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    learning_rate: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.001
    # constant | cosine (decays to 0 over train.epochs, per step: the last epochs polish, seeds agree more)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    label_smoothing: Fraction = 0.0
    # mixup (Zhang et al. 2018): each training example blended with another of its batch, inputs and one-hot
    # labels alike, by a weight drawn from Beta(mixup_alpha, mixup_alpha) per example; 0: off
    mixup_alpha: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0

    def builder_settings(self) -> dict:
        """The settings ``build`` uses (everything but the training keys)."""
        return self.model_dump(exclude=set(VariantSettings.model_fields))


class StudySettings(VariantSettings):
    """The study's cnn: conv stem, then pooling, dropout and a dense head."""

    filters: Count = 32
    kernel_size: Count = 3
    pool_size: Count = 2
    dropout: Fraction = 0.2
    dense_units: Count = 32


class ResNetSettings(VariantSettings):
    """The small ResNet (:func:`attention_cnn.models.blocks.resnet`), its in-model frontend and augmentation."""

    filters: Count = 16
    blocks_per_stage: Count = 2
    stem_strides: Count = 2
    dropout: Fraction = 0.0
    # linear (the input as stored) | logmel: frozen mel filterbank at the features' sample rate (spec.json)
    frontend: Literal["linear", "logmel"] = "linear"
    mel_bins: Count = 64
    time_pool: Count = 1     # logmel: average frames in groups of this many
    augment: Literal["none", "digits", "specaugment", "auto"] = "none"
    # logmel: each mel bin also standardized per utterance, over the frames that hold sound (not the zero frames
    # that pad a clip), before the frontend's BatchNorm; why: a recording's microphone and level shift whole bins
    utterance_norm: bool = False
    # logmel, training only: each clip's mel magnitudes times a random smooth gain curve over frequency (level, tilt,
    # broad bumps; each of its 4 cosine terms has this sd in dB), as another microphone and room would colour it; 0: off
    channel_eq_db: Annotated[float, Field(ge=0, le=20, allow_inf_nan=False)] = 0.0
    # a spectrogram's frequency axis stretched about 0 Hz by a factor in [1 - freq_warp, 1 + freq_warp], drawn
    # per example in training (vocal-tract-length perturbation); 0: off
    freq_warp: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] = 0.0
    # a spectrogram's time axis stretched about its first frame by a factor in [1 - time_warp, 1 + time_warp], drawn
    # per example in training (tempo perturbation: a faster or slower speaker; with freq_warp it spans speed
    # perturbation's changes of rate and pitch); 0: off
    time_warp: Annotated[float, Field(ge=0, le=0.5, allow_inf_nan=False)] = 0.0
    # specaugment's time mask sized and placed on the whole padded time axis (axis: 5-10 % of 1.6 s, on a short word
    # most often over the padding) or on the clip's frames with sound (clip: 10-20 % of them, always on the word)
    time_mask_span: Literal["axis", "clip"] = "axis"
    # the global average pooling before the softmax over the whole padded time axis (axis) or over the positions of
    # the clip's frames with sound (clip); why: on the axis a 0.25 s word is a sixth of the average, the padding's
    # features the rest, so a short word's evidence is scaled down and shifted towards what the padding says;
    # measured on a held-out speaker it lowered the accuracy (docs/training.md, the resnet row)
    pool_span: Literal["axis", "clip"] = "axis"


def is_spectrogram(input_shape, mel_bins: int) -> bool:
    """True for an input (frames, bins, 1) with more than ``mel_bins`` frequency columns (speech: 257).

    Mel filtering only reduces: with ``bins <= mel_bins`` some filters would be narrower than one bin, so such an
    input (MNIST's 28 x 28) is taken for an image and the frontend and SpecAugment leave it alone.
    """
    return len(input_shape) == 3 and int(input_shape[1]) > int(mel_bins)
