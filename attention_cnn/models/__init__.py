"""Model registry: a variant name is a module ``attention_cnn/models/<name>.py`` with a ``build`` function.

``build(input_shape, num_classes, **settings) -> keras.Model`` takes the
variant's settings from ``models.<name>`` in params.yaml (minus the training
keys in :data:`TRAINING_KEYS`). Keeping one file per variant lets DVC rerun
only the variant whose code changed.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from attention_cnn.common import StageError

NOT_VARIANTS = {"blocks"}
TRAINING_KEYS = {"learning_rate", "lr_schedule", "label_smoothing"}   # read by the train stage, not by the builder


def available() -> list[str]:
    """Names of all registered variants (sorted)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_VARIANTS and not m.name.startswith("_"))


def get_builder(name: str):
    if name not in available():
        raise StageError(f"unknown model variant '{name}'; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").build


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, settings: dict[str, Any] | None = None):
    """Build variant ``name``; unknown settings are a one-line error naming ``models.<name>.<key>``."""
    builder = get_builder(name)
    kwargs = {k: v for k, v in (settings or {}).items() if k not in TRAINING_KEYS}
    accepted = inspect.signature(builder).parameters
    for key in kwargs:
        if key not in accepted:
            options = [p for p in accepted if p not in ("input_shape", "num_classes")]
            raise StageError(f"params.yaml: models.{name}.{key} is not a setting of '{name}' (settings: {', '.join(options)})")
    return builder(tuple(input_shape), int(num_classes), **kwargs)


def feature_set(dataset: str, input_shape, settings: dict[str, Any] | None = None) -> str:
    """What the model learns from, in words, for ``results.csv``'s ``features`` column.

    The stored features of the data set (MNIST pixels, speech's linear |STFT|), or the log-mel
    spectrogram a ``frontend: logmel`` variant computes from them inside the model. Frontends run on
    the cached TFRecords, so featurize runs once per data set whatever the variants.
    """
    settings = settings or {}
    shape = [int(n) for n in input_shape]
    if dataset == "mnist" or len(shape) < 2:
        return "pixels " + "x".join(map(str, shape[:2]))
    if settings.get("frontend") == "logmel":
        from attention_cnn.models.blocks import is_spectrogram

        mel_bins, pool = int(settings.get("mel_bins", 64)), int(settings.get("time_pool", 1))
        if is_spectrogram(shape, mel_bins):
            return f"log-mel {-(-shape[0] // pool)}x{mel_bins}"
    return f"linear |STFT| {shape[0]}x{shape[1]}"
