"""Fingerprint of a training run, so a checkpoint (``train.resume: true``) resumes only the run it came from.

A run is determined by three things, each hashed separately so a discarded checkpoint can say which changed:

- ``params``: the data set, variant, seed and every training setting the stage read (``train.resume`` aside:
  switching it on must not discard the state it is meant to keep);
- ``code``: the bytes of every project module the train process has imported when it fingerprints (the stage's
  entry point, the training loop, the variant's file and the blocks it builds from, the input pipeline ...);
- ``data``: the bytes of every file of the input features folder (``spec.json`` and the TFRecord shards).

DVC reruns the stage when any of them changes (they are its deps and params); without this, a stale
checkpoint would continue under the new code or data and the saved model would not be what dvc.lock says.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("attention_cnn", "stages")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def params_digest(dataset: str, variant: str, seed: int, settings: Any) -> str:
    plain = _plain(settings)
    if isinstance(plain, dict):
        plain = {k: v for k, v in plain.items() if k != "resume"}
    payload = {"dataset": dataset, "variant": variant, "seed": seed, "settings": plain}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imported_project_files(variant: str) -> list[Path]:
    """Source files of the project modules loaded in this process (the variant's module imported first)."""
    importlib.import_module(f"attention_cnn.models.{variant}")
    packages = [PROJECT_ROOT / name for name in PROJECT_PACKAGES]
    files = set()
    for module in list(sys.modules.values()):  # by file, so the entry point run as __main__ counts too
        path = getattr(module, "__file__", None)
        if path and path.endswith(".py"):
            resolved = Path(path).resolve()
            if any(resolved.is_relative_to(p) for p in packages):
                files.add(resolved)
    return sorted(files)


def code_digests(variant: str) -> dict[str, str]:
    out = {}
    for path in imported_project_files(variant):
        out[path.relative_to(PROJECT_ROOT).as_posix()] = _file_digest(path)
    return out


def data_digests(features_dir: Path) -> dict[str, str]:
    folder = Path(features_dir)
    return {p.relative_to(folder).as_posix(): _file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def fingerprint(dataset: str, variant: str, seed: int, settings: Any, features_dir: Path) -> dict[str, Any]:
    """``{"params": digest, "code": {file: digest}, "data": {file: digest}}`` of this run."""
    return {"params": params_digest(dataset, variant, seed, settings), "code": code_digests(variant),
            "data": data_digests(features_dir)}


def _changed_files(old: Any, new: dict[str, str]) -> list[str]:
    old = old if isinstance(old, dict) else {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def stale_reason(saved: Any, current: dict[str, Any]) -> str | None:
    """Why a checkpoint with fingerprint ``saved`` must not be resumed by the run ``current``; None if it may."""
    if not isinstance(saved, dict) or not {"params", "code", "data"} <= set(saved):
        return "it has no fingerprint (written by older code)"
    reasons = []
    if saved["params"] != current["params"]:
        reasons.append("params changed")
    code = _changed_files(saved["code"], current["code"])
    if code:
        reasons.append(f"code changed ({_some(code)})")
    data = _changed_files(saved["data"], current["data"])
    if data:
        reasons.append(f"data changed ({_some(data)})")
    return "; ".join(reasons) or None


def _some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
