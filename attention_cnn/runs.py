"""The one owner of the run files that train, evaluate and report exchange: names, columns, keys, writers, readers.

One training run is a (dataset, variant, seed); its files live in a run folder
``{root}/{dataset}/{variant}/seed{seed}/`` (:func:`run_dir`) under two roots (dvc.yaml passes the paths):

- train writes into ``reports/train``:
  ``history.csv`` (:data:`HISTORY_COLUMNS`, one row per epoch, a DVC plot; ``val_*`` empty without
  validation data) and ``summary.json`` (epochs run, training time, best validation accuracy, ...;
  evaluate copies the keys in :data:`SUMMARY_KEYS` into metrics.json);
- evaluate writes into ``reports/eval``:
  ``metrics.json`` (test metrics; the report needs :data:`METRICS_REQUIRED_KEYS`),
  ``predictions.csv`` (:data:`PREDICTION_COLUMNS`, one row per test example, a DVC confusion plot)
  and the ``attention/`` folder (its format: :mod:`attention_cnn.evaluation.attention_maps`);
- report reads them all (:mod:`attention_cnn.report.load`).

Readers validate what they read and fail with one line naming the file; writers are atomic.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence, Union

import pandas as pd

from attention_cnn.common import StageError, atomic_write_json, read_json_object, write_csv_rows

HISTORY_FILE, SUMMARY_FILE = "history.csv", "summary.json"
METRICS_FILE, PREDICTIONS_FILE, ATTENTION_DIR = "metrics.json", "predictions.csv", "attention"

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
PROBABILITY_PREFIX = "p_"   # then one column per class, "p_<class name>": the model's probability of it
# summary.json keys evaluate needs (``features`` and ``best_val_accuracy`` may be absent in older files)
SUMMARY_KEYS = ("dataset", "variant", "seed", "epochs_run", "train_time_s")

# metrics.json: the keys the report needs, and the numbers among them by type
METRICS_INT_KEYS = ("params", "epochs_run", "model_size_bytes", "num_test")
METRICS_FLOAT_KEYS = ("train_time_s", "test_time_ms", "latency_ms_p50", "latency_ms_p95",
                      "test_loss", "test_accuracy", "best_val_accuracy")
# end-to-end latency (a test file through the exported model, attention_cnn.serving): NaN when absent
METRICS_OPTIONAL_FLOAT_KEYS = ("e2e_latency_ms_p50", "e2e_latency_ms_p95")
METRICS_NULLABLE_KEYS = ("best_val_accuracy",)  # null: the run had no validation data (train.validation_fraction: 0)
METRICS_REQUIRED_KEYS = (
    "dataset", "variant", "seed", "source", "params", "model_size_bytes", "epochs_run",
    "train_time_s", "test_time_ms", "latency_ms_p50", "latency_ms_p95", "test_loss",
    "test_accuracy", "best_val_accuracy", "num_test", "class_names", "per_class",
)
PER_CLASS_KEYS = ("precision", "recall", "support")

PathLike = Union[str, Path]


def run_dir(root: PathLike, dataset: str, variant: str, seed: int) -> Path:
    """The run folder of one (dataset, variant, seed) under ``root`` (reports/train or reports/eval)."""
    return Path(root) / dataset / variant / f"seed{seed}"


def missing(path: Path) -> StageError:
    return StageError(f"{path}: not found; run `dvc repro` to produce it")


def as_int(value: Any, path: Path, key: str) -> int:
    """A whole number from JSON (``3`` or ``3.0``), else a one-line error naming the file and key."""
    if isinstance(value, bool):
        raise StageError(f"{path}: '{key}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise StageError(f"{path}: '{key}' must be an integer, got {value!r}")


def as_float(value: Any, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StageError(f"{path}: '{key}' must be a number, got {value!r}")
    return float(value)


def _read_csv(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, float_precision="round_trip", **kwargs)
    except FileNotFoundError:
        raise missing(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{path}: cannot read CSV ({msg})") from None
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise StageError(f"{path}: missing column(s) {', '.join(absent)}")
    return df


# --------------------------------------------------------------------------- train: history.csv, summary.json


def write_history(path: PathLike, rows: Sequence[Sequence[Any]]) -> None:
    """Rows of ``HISTORY_COLUMNS`` values (epoch from 1; "" where a metric is absent)."""
    write_csv_rows(path, list(HISTORY_COLUMNS), list(rows))


def read_history(path: PathLike) -> pd.DataFrame:
    """One run's history.csv, validated: numeric columns (float64), whole epochs (int64), at least one row."""
    path = Path(path)
    df = _read_csv(path, HISTORY_COLUMNS)
    if df.empty:
        raise StageError(f"{path}: no epochs recorded")
    for c in HISTORY_COLUMNS:
        converted = pd.to_numeric(df[c], errors="coerce")
        if converted.isna().any() and not df[c].isna().equals(converted.isna()):
            raise StageError(f"{path}: column '{c}' has non-numeric values")
        df[c] = converted.astype("float64")
    if df["epoch"].isna().any() or not (df["epoch"] % 1 == 0).all():
        raise StageError(f"{path}: column 'epoch' must hold whole numbers")
    df["epoch"] = df["epoch"].astype("int64")
    return df


def _write_checked(path: PathLike, obj: dict[str, Any], keys: Sequence[str], what: str) -> None:
    """Write a run file; a writer that forgot a key the readers need is a bug, caught before the file exists."""
    absent = [k for k in keys if k not in obj]
    if absent:
        raise ValueError(f"{what} lacks {', '.join(absent)}")
    atomic_write_json(path, obj)


def write_summary(path: PathLike, summary: dict[str, Any]) -> None:
    _write_checked(path, summary, SUMMARY_KEYS, "summary")


def read_summary(path: PathLike) -> dict[str, Any]:
    """train's summary.json with at least :data:`SUMMARY_KEYS`."""
    raw = read_json_object(Path(path), "run the train stage first (dvc repro)")
    absent = [k for k in SUMMARY_KEYS if k not in raw]
    if absent:
        raise StageError(f"{path}: missing key(s) {', '.join(absent)}; rerun the train stage (dvc repro)")
    return raw


# --------------------------------------------------------------------------- evaluate: metrics.json, predictions.csv


def write_metrics(path: PathLike, metrics: dict[str, Any]) -> None:
    _write_checked(path, metrics, METRICS_REQUIRED_KEYS, "metrics")


def read_metrics(path: PathLike, dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """One run's metrics.json, checked against the run it should belong to; a normalised dict with the
    identity keys, ``source``, ``features`` ("" when absent), the numbers (NaN for a null nullable one),
    ``class_names`` and ``per_class`` ({class: {precision, recall, support}}, NaN where absent)."""
    path = Path(path)
    raw = read_json_object(path, "run `dvc repro` to produce it")
    absent = [k for k in METRICS_REQUIRED_KEYS if k not in raw]
    if absent:
        raise StageError(f"{path}: missing key(s) {', '.join(absent)}; re-run `dvc repro`")
    expected = {"dataset": dataset, "variant": variant, "seed": seed}
    for key, want in expected.items():
        got = raw[key]
        if (key == "seed" and (isinstance(got, bool) or got != want)) or (key != "seed" and got != want):
            raise StageError(f"{path}: '{key}' is {got!r} but the file's location says {want!r}")
    rec: dict[str, Any] = {"dataset": dataset, "variant": variant, "seed": seed, "source": str(raw["source"]),
                           "features": str(raw.get("features") or "")}  # optional: older metrics lack it
    for key in METRICS_INT_KEYS:
        rec[key] = as_int(raw[key], path, key)
    for key in METRICS_FLOAT_KEYS:
        rec[key] = math.nan if (key in METRICS_NULLABLE_KEYS and raw[key] is None) else as_float(raw[key], path, key)
    for key in METRICS_OPTIONAL_FLOAT_KEYS:
        rec[key] = math.nan if raw.get(key) is None else as_float(raw[key], path, key)

    names = raw["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StageError(f"{path}: 'class_names' must be a list of strings")
    per_class = raw["per_class"]
    if not isinstance(per_class, dict):
        raise StageError(f"{path}: 'per_class' must be an object keyed by class name")
    cleaned: dict[str, dict[str, float]] = {}
    for cls, scores in per_class.items():
        if not isinstance(scores, dict):
            raise StageError(f"{path}: per_class[{cls!r}] must be an object")
        cleaned[str(cls)] = {k: as_float(scores[k], path, f"per_class.{cls}.{k}") if k in scores else math.nan
                             for k in PER_CLASS_KEYS}
    rec["class_names"] = list(names)
    rec["per_class"] = cleaned
    return rec


def write_predictions(path: PathLike, rows: Sequence[Sequence[Any]], class_names: Sequence[str] = ()) -> None:
    """Rows of (test example index, actual class name, predicted class name, confidence of the prediction, then
    the probability of each of ``class_names``, in that order)."""
    write_csv_rows(path, [*PREDICTION_COLUMNS, *(PROBABILITY_PREFIX + str(n) for n in class_names)], list(rows))


def read_predictions(path: PathLike) -> pd.DataFrame:
    """One run's predictions.csv with actual/predicted kept as strings (class names such as "0")."""
    return _read_csv(Path(path), PREDICTION_COLUMNS, dtype={"actual": str, "predicted": str}, keep_default_na=False)


def probability_columns(predictions: pd.DataFrame) -> list[str]:
    """The per-class probability columns of :func:`read_predictions`' frame (none in files written before them)."""
    return [c for c in predictions.columns if str(c).startswith(PROBABILITY_PREFIX)]
