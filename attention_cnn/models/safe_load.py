"""Load a saved ``model.keras`` without running code from it: the one way this project loads a model.

Models come from a DVC cache and a shared remote that many people write to, so a model file is untrusted
input. Before Keras deserializes anything, :func:`load_model`

1. refuses anything but a ``.keras`` zip (a legacy HDF5 file ignores ``safe_mode``, CVE-2025-9905);
2. checks every member's CRC-32 (``ZipFile.testzip``), so flipped bytes are named, not a ``BadZipFile``
   traceback or, worse, weights loaded from damaged bytes;
3. reads ``config.json`` with :mod:`json` (no Keras) and walks every nested object entry: each
   ``(module, class_name, registered_name)`` must be one of :data:`ALLOWED`, the classes this project's
   registered variants save (``tests/unit/test_safe_load.py`` builds every variant and checks the list covers
   them). ``Lambda`` layers, functions (``"class_name": "function"``), ``__lambda__`` code and any module
   outside Keras (``subprocess``, ``os``, ``builtins``) are refused;

and only then calls ``keras.saving.load_model(..., safe_mode=True)``. A refused or damaged file is a
one-line :class:`StageError` naming the file, the offending entry and how to restore it.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Iterator

from attention_cnn.common import StageError

CONFIG_MEMBER = "config.json"
MAX_CONFIG_BYTES = 64 << 20  # far above any variant's config; refuses a zip bomb posing as one

_LAYERS = ("Activation", "Add", "AveragePooling2D", "BatchNormalization", "Concatenate", "Conv2D", "Cropping2D", "Dense",
           "Dropout", "Flatten", "GaussianNoise", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "InputLayer", "LayerNormalization",
           "MaxPooling2D", "MultiHeadAttention", "Multiply", "RandomRotation", "RandomTranslation", "RandomZoom", "ReLU",
           "Rescaling", "Reshape", "UpSampling2D", "ZeroPadding2D")

# (module, class_name, registered_name) of every object a saved model of this project may name.
ALLOWED: frozenset[tuple[str | None, str, str | None]] = frozenset(
    {("keras.layers", name, None) for name in _LAYERS}
    | {("keras.initializers", name, None) for name in ("GlorotUniform", "Ones", "Zeros")}
    | {
        ("keras.src.models.functional", "Functional", "Functional"),  # the model itself
        (None, "__keras_tensor__", None),                              # a connection between two layers
        ("keras", "DTypePolicy", None),                                 # float32 / mixed_bfloat16 policies
        ("keras.src.ops.numpy", "Mean", "Mean"),                        # keras.ops calls in CBAM
        ("keras.src.ops.numpy", "Max", "Max"),
        ("keras.src.ops.numpy", "Log1p", "Log1p"),                      # the logmel frontend
        # its per-utterance normalization (blocks.normalize_per_utterance): arithmetic on tensors, no code
        *{("keras.src.ops.numpy", op, op) for op in ("Add", "Divide", "Greater", "Maximum", "Multiply", "Square",
                                                     "Subtract", "Sum")},
        ("keras.src.ops.math", "Rsqrt", "Rsqrt"),
        # SpecAugment's time mask fitted to the clip (blocks.fit_to_clip): positions, a lookup in the mask
        *{("keras.src.ops.numpy", op, op) for op in ("Cumsum", "Minimum", "TakeAlongAxis")},
        ("keras.src.ops.core", "Cast", "Cast"),                         # mixed precision, as Keras 3.8 saved it
        # Training checkpoints (state-<epoch>.keras, compiled): the loss, the learning-rate schedule and the project's
        # own optimizer, dropout and gate convolution, which resolve only through their registrations in attention_cnn.
        ("keras.losses", "CategoricalCrossentropy", None),
        ("keras.optimizers.schedules", "CosineDecay", None),
        ("attention_cnn.training.optimizers", "FusedAdam", "attention_cnn>FusedAdam"),
        ("attention_cnn.models.blocks", "FastDropout", "attention_cnn>FastDropout"),
        ("attention_cnn.models.blocks", "GateConv", "attention_cnn>GateConv"),
    })
# Keys that make Keras import or call something when they appear in an object entry.
_SENSITIVE_KEYS = ("module", "class_name", "registered_name", "fn_module", "function")


def restore_hint(path: str | os.PathLike) -> str:
    folder = Path(path).parent
    return f"restore it with `dvc checkout --relink {folder}` or `dvc pull {folder}`, or retrain it (`dvc repro -f` its train stage)"


def object_entries(config: Any, where: str = "config.json") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every nested dict of ``config`` that names a module, class or function, with its path (``layers[3]/...``)."""
    if isinstance(config, dict):
        if any(key in config for key in _SENSITIVE_KEYS):
            yield where, config
        for key, value in config.items():
            yield from object_entries(value, f"{where}/{key}")
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from object_entries(value, f"{where}[{i}]")


def describe(entry: dict[str, Any]) -> str:
    """``module.class_name`` (and the registered name when it differs) of one object entry."""
    module, cls = entry.get("module"), entry.get("class_name")
    if cls == "function" and isinstance(entry.get("config"), str):  # a function entry: its name is in "config"
        cls = f"{entry['config']} (a function)"
    text = f"{module}.{cls}" if module else str(cls)
    registered = entry.get("registered_name")
    if registered not in (None, cls):
        text += f" (registered as {registered!r})"
    for key in ("fn_module", "function"):
        if key in entry:
            text += f" ({key}={str(entry[key])[:60]!r})"
    return text


def check_config(config: Any, source: str | os.PathLike) -> None:
    """Refuse ``config`` (a parsed ``config.json``) unless every object entry is in :data:`ALLOWED`."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise StageError(f"{source}: refused: config.json is not a Keras model config; {restore_hint(source)}")
    for where, entry in object_entries(config):
        key = (entry.get("module"), entry.get("class_name"), entry.get("registered_name"))
        extra = [k for k in ("fn_module", "function") if k in entry]
        if key not in ALLOWED or extra or not all(isinstance(v, (str, type(None))) for v in key):
            raise StageError(f"{source}: refused: {where} names {describe(entry)}, which is not a class this "
                             f"project's models use (allowed: attention_cnn/models/safe_load.py); do not load "
                             f"this file, {restore_hint(source)}")


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a ``.keras`` file, after checking every member's CRC (no Keras involved)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path}: model not found; run the train stage first (dvc repro)")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise StageError(f"{path}: not a .keras model archive (only the Keras v3 zip format is loaded); "
                         f"{restore_hint(path)}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise StageError(f"{path}: corrupt model file (member {bad} fails its CRC check); {restore_hint(path)}")
            info = archive.getinfo(CONFIG_MEMBER)
            if info.file_size > MAX_CONFIG_BYTES:
                raise StageError(f"{path}: refused: {CONFIG_MEMBER} is {info.file_size} bytes; {restore_hint(path)}")
            return json.loads(archive.read(info).decode("utf-8"))
    except KeyError:
        raise StageError(f"{path}: corrupt model file (no {CONFIG_MEMBER}); {restore_hint(path)}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, UnicodeDecodeError, ValueError,
            NotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{path}: corrupt model file ({reason}); {restore_hint(path)}") from None


def load_model(path: str | os.PathLike, *, compile: bool = False):
    """Check ``path`` (see the module docstring), then load it with ``safe_mode=True``."""
    path = Path(path)
    check_config(read_config(path), path)
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"{path}: cannot load model ({reason[:300]}); {restore_hint(path)}") from None
