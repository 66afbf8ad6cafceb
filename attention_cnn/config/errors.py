"""One line for the first mistake pydantic found: ``<dotted.key> must be ..., got ...``, with "did you mean"."""
from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

TAGS = {"(one)", "(each)"}  # union branch tags (params.PerDataset, params.OneOrMany): not keys, left out of a dotted key

TYPE_WORDS = {
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
# Keys that existed once, and what to do instead (an old params.yaml names them).
RETIRED = {"sample_rate_hz": "the logmel frontend takes the rate from the features' spec.json "
                             "(features.speech.sample_rate_hz); delete this key"}
BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


class RuleError(ValueError):
    """A check across keys (a model validator) failed; its text names the keys and is the whole message."""


def show(value: Any, limit: int = 60) -> str:
    """``repr`` of a user's value, shortened to fit in one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: Any, options: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'x'?)`` for the closest option (difflib), or ``''``."""
    match = difflib.get_close_matches(str(word), [o for o in options if o], n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def dotted(loc: Sequence[Any]) -> str:
    key = ""
    for part in loc:
        if part in TAGS:
            continue
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None`` or ``Annotated[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return next((m for m in map(_model_of, typing.get_args(annotation)) if m), None)
    return None


def keys_at(root: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """The keys the section at ``loc`` accepts (for "did you mean")."""
    model: type[BaseModel] | None = root
    for part in (p for p in loc if p not in TAGS):
        field = model.model_fields.get(part) if model else None
        model = _model_of(field.annotation) if field else None
    return list(model.model_fields) if model else []


def one_line(exc: ValidationError, root: type[BaseModel]) -> str:
    """The first error of ``exc`` (validating ``root``) as one line naming the dotted key."""
    errors = exc.errors()
    # An unknown key first: a misspelt key also makes its right spelling "missing".
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    kind, loc, value, ctx = error["type"], list(error["loc"]), error.get("input"), error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), RuleError):
        return " ".join(str(ctx["error"]).split())
    if kind == "literal_error" and loc and loc[-1] == "[key]":  # a mapping with fixed keys (data set names)
        loc, kind = loc[:-1], "unknown_key"
    key = dotted(loc)
    if kind == "missing":
        return f"missing key '{key}'"
    if kind in ("extra_forbidden", "unknown_key"):
        parent = dotted(loc[:-1])
        options = (re.findall(r"'([^']*)'", ctx.get("expected", "")) if kind == "unknown_key"
                   else keys_at(root, loc[:-1]))
        hint = did_you_mean(loc[-1], options, prefix=f"{parent}." if parent else "")
        if not hint and parent.startswith("models.") and loc[-1] in RETIRED:
            hint = f"; {RETIRED[loc[-1]]}"
        if not hint:
            hint = f"; keys here: {', '.join(options)}" if options else f"; '{parent}' takes no keys"
        return f"unknown key '{key}'{hint}"
    if kind == "too_short" and isinstance(value, list):
        return f"{key} must not be empty"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        listed = ", ".join(c if c else "''" for c in choices)
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        return f"{key} must be one of {listed}, got {show(value)}{hint}"
    if kind in BOUNDS:
        bound = next(iter(ctx.values()))
        return f"{key} must be {BOUNDS[kind]} {bound}, got {show(value)}"
    if kind == "value_error":
        text = " ".join(str(ctx.get("error", error["msg"])).split())
        return f"{key} {text}, got {show(value)}" if text.startswith("must") else f"{key} {text}"
    expected = TYPE_WORDS.get(kind)
    if expected is None:
        return f"{key}: {error['msg']}, got {show(value)}"
    return f"{key} must be {expected}, got {show(value)}{_quoted_number_hint(value)}"


def _quoted_number_hint(value: Any) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (a quoted number is text; remove the quotes)"
    return ""
