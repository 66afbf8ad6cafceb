"""Model registry: a variant is a module ``attention_cnn/models/<name>.py`` with a ``Settings`` class and a ``build``.

``Settings`` (a :class:`attention_cnn.models.settings.VariantSettings`) declares ``models.<name>`` in params.yaml,
defaults included; ``build(input_shape, num_classes, settings)`` returns the Keras model. A new variant is one
module plus one params section. One file per variant lets DVC rerun only the variant whose code changed.
Importing a variant module does not load Keras (``build`` does), so the config can read every ``Settings``.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from attention_cnn.common import StageError
from attention_cnn.models.settings import ResNetSettings, VariantSettings, is_spectrogram

NOT_VARIANTS = {"blocks", "settings", "safe_load"}


def available() -> list[str]:
    """Names of all registered variants (sorted)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_VARIANTS and not m.name.startswith("_"))


def variant_module(name: str) -> ModuleType:
    if name not in available():
        raise StageError(f"unknown model variant '{name}'; available: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}")


def settings_type(name: str) -> type[VariantSettings]:
    """The ``Settings`` class of variant ``name``: what ``models.<name>`` accepts."""
    return variant_module(name).Settings


@dataclass(frozen=True)
class VariantInfo:
    """What a variant is, as its module declares it (``BASELINE``, ``NOTE``)."""

    name: str
    baseline: str | None  # the variant without attention the report tests it against; None for a baseline
    note: str             # what it adds, in the report's words ("" for the study's own two models)


def variant_info(name: str) -> VariantInfo:
    module = variant_module(name)
    if not hasattr(module, "BASELINE") or not hasattr(module, "NOTE"):
        raise StageError(f"attention_cnn/models/{name}.py: declare BASELINE (the variant it is tested against, or "
                         "None) and NOTE (what it adds, for the report) at the top")
    return VariantInfo(name, module.BASELINE, module.NOTE)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                settings: VariantSettings | dict[str, Any] | None = None, *, sample_rate_hz: float | None = None):
    """Build variant ``name`` with its settings (a ``Settings``; a dict, as in tests, is validated into one).

    ``sample_rate_hz``: the features' sample rate (spec.json), for variants whose frontend needs it.
    """
    module = variant_module(name)
    if not isinstance(settings, VariantSettings):
        settings = module.Settings.model_validate(settings or {})
    extra = {"sample_rate_hz": sample_rate_hz} if "sample_rate_hz" in inspect.signature(module.build).parameters else {}
    return module.build(tuple(input_shape), int(num_classes), settings, **extra)


def feature_set(dataset: str, input_shape, settings: VariantSettings) -> str:
    """What the model learns from, in words, for ``results.csv``'s ``features`` column.

    The stored features of the data set (MNIST pixels, speech's linear |STFT|), or the log-mel
    spectrogram a ``frontend: logmel`` variant computes from them inside the model. Frontends run on
    the cached TFRecords, so featurize runs once per data set whatever the variants.
    """
    shape = [int(n) for n in input_shape]
    if dataset == "mnist" or len(shape) < 2:
        return "pixels " + "x".join(map(str, shape[:2]))
    logmel = isinstance(settings, ResNetSettings) and settings.frontend == "logmel"
    if logmel and is_spectrogram(shape, settings.mel_bins):
        return f"log-mel {-(-shape[0] // settings.time_pool)}x{settings.mel_bins}"
    return f"linear |STFT| {shape[0]}x{shape[1]}"
