"""Read ``params.yaml`` exactly as DVC does, then validate it once into :class:`~attention_cnn.config.params.Params`.

DVC parses params with ruamel.yaml's safe loader, YAML 1.2 (``dvc/utils/serialize/_yaml.py``); so does this
module, so a value means the same to a stage as to ``dvc params diff``, ``dvc.lock`` and ``exp show``:
``010`` is 10, ``1e-3`` is 0.001, ``yes`` and ``1:30`` are strings, a duplicated key is refused.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from attention_cnn.common import StageError
from attention_cnn.config.errors import one_line
from attention_cnn.config.params import Params

PARAMS_FILE = "params.yaml"


def read_yaml(path: str | os.PathLike) -> Any:
    """The parsed file (``{}`` when empty, as DVC); every failure is one :class:`StageError` line naming the file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{p}: params file not found; run from the project root") from None
    except OSError as exc:
        raise StageError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise StageError(f"{p}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file as UTF-8") from None
    try:
        return YAML(typ="safe").load(text) or {}
    except MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        raise StageError(f"{p}: {where}not valid YAML ({exc.problem or exc.context})") from None
    except YAMLError as exc:
        raise StageError(f"{p}: not valid YAML ({' '.join(str(exc).split())})") from None


def parse_config(data: Any, source: str = PARAMS_FILE, all_models: bool = True) -> Params:
    """Validate loaded params; a mistake is one :class:`StageError` line ``<source>: <key> ...``.

    ``all_models``: also validate every ``models.<variant>`` section, which imports every variant module. A
    stage passes False and validates the one variant it uses (:meth:`Params.model`), so that DVC can make it
    depend on that variant's code only.
    """
    if not isinstance(data, dict):
        raise StageError(f"{source}: expected a mapping of parameters at the top level")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise StageError(f"{source}: {one_line(exc, Params)}") from None
    if all_models:
        params.check_all_models(source)
    return params


def load_config(path: str | os.PathLike = PARAMS_FILE, changes: dict[str, Any] | None = None,
                all_models: bool = False) -> Params:
    """``params.yaml`` read with DVC's YAML rules and validated, defaults filled in: the one config of a stage.

    ``changes``: ``{dotted key: value}`` set before validation, as ``dvc exp run -S`` would (tests, the bench).
    ``all_models``: see :func:`parse_config`; a stage validates its variant's section with :meth:`Params.model`.
    """
    data = read_yaml(path)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_config(data, str(path), all_models)
