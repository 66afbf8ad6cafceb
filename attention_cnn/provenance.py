"""Which params a run really used, and whether DVC's record (``dvc.lock``) says the same.

DVC reads ``params.yaml`` for ``dvc.lock`` *after* a stage's command has finished. If the file changes while
the stage runs (a second ``dvc exp run -S`` in the same workspace rewrites it before DVC notices the busy
workspace), the lock records values the stage never saw, and ``dvc status`` calls the result clean. So:

- :class:`ParamsGuard`: a stage snapshots ``params.yaml`` when it starts and, before writing any output,
  refuses to finish when a key it reads has changed since (nothing is written, so DVC records nothing);
- :func:`used_params`: the train stage writes the sections it read into ``summary.json`` (``params_used``);
- :func:`check_recorded_params`: the report refuses a run whose ``params_used`` differs from ``dvc.lock``.

YAML is parsed as DVC parses it (ruamel.yaml, safe, YAML 1.2), so both sides mean the same values.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

from attention_cnn.common import StageError

QUEUE_HINT = "run experiments side by side through the queue: dvc exp run --queue -S ...; dvc queue start"
MISSING = object()


def read_yaml_as_dvc(path: str | os.PathLike) -> Any:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(Path(path).read_text(encoding="utf-8")) or {}


def _plain(value: Any) -> Any:
    """A validated config object (pydantic model) or plain data -> plain dicts, lists and scalars."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def lookup(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def leaves(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """``("a.b.c", scalar-or-list)`` for every leaf under ``value``; an empty mapping is a leaf."""
    if isinstance(value, dict) and value:
        for key in sorted(value, key=str):
            yield from leaves(f"{prefix}.{key}" if prefix else str(key), value[key])
    else:
        yield prefix, value


def same_value(a: Any, b: Any) -> bool:
    """Equal as DVC and Python read them: 10 == 10.0, but "1:30" != 90 and True != 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def first_difference(prefixes: list[str], old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """The first leaf key under ``prefixes`` whose value differs between two parsed params files."""
    for prefix in prefixes:
        a, b = lookup(old, prefix), lookup(new, prefix)
        keys = dict(leaves(prefix, a)) if a is not MISSING else {}
        other = dict(leaves(prefix, b)) if b is not MISSING else {}
        for key in sorted(set(keys) | set(other)):
            x, y = keys.get(key, MISSING), other.get(key, MISSING)
            if x is MISSING or y is MISSING or not same_value(x, y):
                return key, x, y
    return None


def show(value: Any) -> str:
    return "(absent)" if value is MISSING else json.dumps(value, default=str)


def train_sections(variant: str) -> list[str]:
    """The params sections the train stage reads (dvc.yaml lists keys inside these)."""
    return ["train", f"models.{variant}"]


def used_params(params: Any, variant: str) -> dict[str, Any]:
    """The train stage's sections of its loaded params, as plain data for ``summary.json``."""
    tree = _plain(params)
    out: dict[str, Any] = {}
    for section in train_sections(variant):
        value = lookup(tree, section)
        if value is not MISSING:
            node = out
            *parents, last = section.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
    return out


class ParamsGuard:
    """Snapshot of ``params.yaml`` at a stage's start; :meth:`check` before writing outputs."""

    def __init__(self, path: str | os.PathLike, sections: list[str]) -> None:
        self.path, self.sections = Path(path), list(sections)
        self.raw = self.path.read_bytes()
        self.tree = read_yaml_as_dvc(self.path)

    def check(self, stage: str) -> None:
        """One-line :class:`StageError` when a key this stage reads changed in ``params.yaml`` since the start."""
        try:
            raw = self.path.read_bytes()
            if raw == self.raw:
                return
            now = read_yaml_as_dvc(self.path)
        except Exception:  # noqa: BLE001 - gone or unparsable now: certainly not what the stage read
            raise StageError(f"{self.path} changed while {stage} ran (now unreadable); nothing recorded. "
                             f"{QUEUE_HINT}") from None
        diff = first_difference(self.sections, self.tree, now)
        if diff:
            key, old, new = diff
            raise StageError(f"{self.path} changed while {stage} ran: {key} is now {show(new)}, this run used "
                             f"{show(old)} (another dvc exp run in this workspace?); nothing recorded. {QUEUE_HINT}")


def lock_stage_params(lock: dict[str, Any], stage: str, params_file: str = "params.yaml") -> dict[str, Any] | None:
    entry = (lock.get("stages") or {}).get(stage)
    if entry is None:
        return None
    return dict((entry.get("params") or {}).get(params_file) or {})


def train_stage_name(dataset: str, variant: str, seed: int) -> str:
    return f"train@{dataset}-{variant}-{seed}"  # dvc.yaml's matrix: dataset, variant, seed


def check_recorded_params(lock_path: str | os.PathLike, train_dir: str | os.PathLike,
                          runs: list[tuple[str, str, int]]) -> None:
    """Refuse (one line naming the run and the key) a run whose ``summary.json`` params differ from ``dvc.lock``.

    Without a ``dvc.lock`` (the report run by hand, outside DVC) there is no record to compare with.
    """
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        return
    try:
        lock = read_yaml_as_dvc(lock_path)
    except Exception:  # noqa: BLE001
        raise StageError(f"{lock_path}: not readable YAML; restore it from git (git checkout {lock_path})") from None
    for dataset, variant, seed in runs:
        stage = train_stage_name(dataset, variant, seed)
        recorded_by_dvc = lock_stage_params(lock, stage)
        if recorded_by_dvc is None:
            raise StageError(f"{lock_path} has no record of {stage}; run the pipeline with dvc repro")
        summary_path = Path(train_dir) / dataset / variant / f"seed{seed}" / "summary.json"
        try:
            used = json.loads(summary_path.read_text()).get("params_used")
        except (OSError, ValueError):
            raise StageError(f"{summary_path}: missing or not JSON; rerun it: dvc repro -f {stage}") from None
        if not isinstance(used, dict):
            raise StageError(f"{stage}: {summary_path} records no params_used (trained by older code); "
                             f"rerun it: dvc repro -f {stage}")
        for dotted, value in sorted(recorded_by_dvc.items()):
            for key, locked in leaves(dotted, value):
                got = lookup(used, key)
                if got is MISSING or not same_value(got, locked):
                    raise StageError(f"{stage}: dvc.lock records {key}={show(locked)} but the run trained with "
                                     f"{show(got)} ({summary_path}); the record is wrong: rerun it with "
                                     f"dvc repro -f {stage}")
