"""Reading the report's inputs: which runs (params), their run files, the fetch stages' notes, the attention maps.

Everything here only reads and validates (one-line errors naming the file); the run files' formats are
:mod:`attention_cnn.runs`'s, the attention folder's :mod:`attention_cnn.evaluation.attention_maps`'s.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import pandas as pd

from attention_cnn import runs
from attention_cnn.common import StageError
from attention_cnn.config.params import Params
from attention_cnn.evaluation import attention_maps

RECORD_COLUMNS = [
    "dataset", "variant", "seed", "source", "features", "params", "epochs_run", "train_time_s",
    "test_time_ms", "latency_ms_p50", "latency_ms_p95", "e2e_latency_ms_p50", "e2e_latency_ms_p95", "test_loss",
    "test_accuracy",
    "best_val_accuracy", "model_size_bytes", "num_test",
]
# results.csv: the per-run record, then the test accuracy's mean and sample sd over the seeds of the same
# dataset x variant (repeated on each of its rows; the sd is empty for a single seed).
RESULT_COLUMNS = RECORD_COLUMNS + ["test_accuracy_mean", "test_accuracy_sd"]
INT_COLUMNS = ("seed", *runs.METRICS_INT_KEYS)
FLOAT_COLUMNS = runs.METRICS_FLOAT_KEYS + runs.METRICS_OPTIONAL_FLOAT_KEYS
HISTORY_LONG_COLUMNS = ["dataset", "variant", "seed", "epoch", "split", "accuracy", "loss"]

# --------------------------------------------------------------------------- which runs


@dataclass(frozen=True)
class Selection:
    """Which runs to report, in params.yaml order."""

    datasets: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]


def selection_from_params(config: Params) -> Selection:
    """The runs params.yaml lists (names and seeds already checked by the config)."""
    return Selection(tuple(config.datasets), tuple(config.variants), tuple(config.train.seeds))


def combos(datasets: Iterable[str], variants: Iterable[str], seeds: Iterable[int]) -> list[tuple[str, str, int]]:
    """All (dataset, variant, seed) combinations, sorted as the tables are."""
    return sorted((d, v, int(s)) for d in datasets for v in variants for s in seeds)


# --------------------------------------------------------------------------- metrics


def load_run_metrics(eval_dir, dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """One run's metrics.json, validated and normalised (:func:`attention_cnn.runs.read_metrics`)."""
    return runs.read_metrics(runs.run_dir(eval_dir, dataset, variant, seed) / runs.METRICS_FILE, dataset, variant, seed)


def load_all_metrics(eval_dir, datasets, variants, seeds) -> list[dict[str, Any]]:
    """Every selected run's metrics, sorted by (dataset, variant, seed)."""
    return [load_run_metrics(eval_dir, d, v, s) for d, v, s in combos(datasets, variants, seeds)]


def results_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The tidy results table (RESULT_COLUMNS) from loaded metrics records."""
    rows = [{c: r[c] for c in RECORD_COLUMNS} for r in records]
    df = pd.DataFrame(rows, columns=RECORD_COLUMNS)
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    for c in FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    groups = df.groupby(["dataset", "variant"], sort=False)["test_accuracy"]
    df["test_accuracy_mean"] = groups.transform("mean").round(6)
    df["test_accuracy_sd"] = groups.transform(lambda a: a.std(ddof=1) if len(a) > 1 else math.nan).round(6)
    return df.sort_values(["dataset", "variant", "seed"], kind="mergesort").reset_index(drop=True)


def collect_results(eval_dir, datasets, variants, seeds) -> pd.DataFrame:
    """One row per dataset x variant x seed, columns RESULT_COLUMNS, sorted."""
    return results_frame(load_all_metrics(eval_dir, datasets, variants, seeds))


def class_order(records: Sequence[dict[str, Any]], dataset: str) -> list[str]:
    """Class names of a data set: the first run's order, then any others as they appear."""
    order: list[str] = []
    for r in records:
        if r["dataset"] != dataset:
            continue
        for name in list(r["class_names"]) + list(r["per_class"]):
            if name not in order:
                order.append(name)
    return order


def per_class_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Long per-class table: dataset, variant, seed, class, precision, recall, support."""
    rows = []
    for r in records:
        for cls in class_order(records, r["dataset"]):
            scores = r["per_class"].get(cls, {})
            rows.append({
                "dataset": r["dataset"], "variant": r["variant"], "seed": r["seed"], "class": cls,
                "precision": scores.get("precision", math.nan),
                "recall": scores.get("recall", math.nan),
                "support": scores.get("support", math.nan),
            })
    return pd.DataFrame(rows, columns=["dataset", "variant", "seed", "class", "precision", "recall", "support"])


# --------------------------------------------------------------------------- histories and predictions


def load_history(train_dir, dataset: str, variant: str, seed: int) -> pd.DataFrame:
    """One run's history.csv, validated (:func:`attention_cnn.runs.read_history`)."""
    return runs.read_history(runs.run_dir(train_dir, dataset, variant, seed) / runs.HISTORY_FILE)


def long_history(history: pd.DataFrame, dataset: str, variant: str, seed: int) -> pd.DataFrame:
    """history.csv (wide) -> rows with split 'train' / 'val' and columns accuracy, loss."""
    train = pd.DataFrame({"epoch": history["epoch"], "split": "train",
                          "accuracy": history["accuracy"], "loss": history["loss"]})
    val = pd.DataFrame({"epoch": history["epoch"], "split": "val",
                        "accuracy": history["val_accuracy"], "loss": history["val_loss"]})
    out = pd.concat([train, val], ignore_index=True)
    out.insert(0, "seed", int(seed))
    out.insert(0, "variant", variant)
    out.insert(0, "dataset", dataset)
    return out


def load_histories(train_dir, datasets, variants, seeds) -> pd.DataFrame:
    """Long learning-curve table: HISTORY_LONG_COLUMNS, sorted."""
    parts = [long_history(load_history(train_dir, d, v, s), d, v, s) for d, v, s in combos(datasets, variants, seeds)]
    cols = HISTORY_LONG_COLUMNS
    df = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    df = df.sort_values(["dataset", "variant", "seed", "split", "epoch"], kind="mergesort")
    return df.reset_index(drop=True)


def predictions_path(eval_dir, dataset: str, variant: str, seed: int) -> Path:
    return runs.run_dir(eval_dir, dataset, variant, seed) / runs.PREDICTIONS_FILE


def load_predictions(eval_dir, dataset: str, variant: str, seed: int) -> pd.DataFrame:
    """One run's predictions.csv (:func:`attention_cnn.runs.read_predictions`)."""
    return runs.read_predictions(predictions_path(eval_dir, dataset, variant, seed))


# --------------------------------------------------------------------------- input data (fetch stages)


@dataclass(frozen=True)
class InputInfo:
    """What the fetch stage of one data set left out or warned about (from its source.json)."""

    skipped: int = 0                 # bad input files left out (data.on_bad_file: skip)
    duplicates_across_splits: int = 0
    skipped_csv: str = ""            # where the skipped files are listed
    split: str = ""                  # how train and test were split (source.json split_description)


def load_input_info(raw_dir: Union[str, Path], datasets: Iterable[str]) -> dict[str, InputInfo]:
    """``{dataset: InputInfo}`` from ``{raw_dir}/{d}/source.json``; a missing file counts as nothing skipped."""
    out: dict[str, InputInfo] = {}
    for d in datasets:
        folder = Path(raw_dir) / d
        path = folder / "source.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            out[d] = InputInfo()
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StageError(f"{path}: not valid JSON ({exc}); rerun the fetch stage (dvc repro)") from None
        if not isinstance(raw, dict):
            raise StageError(f"{path}: expected a JSON object; rerun the fetch stage (dvc repro)")
        skipped = runs.as_int(raw.get("skipped", 0), path, "skipped")
        dups = runs.as_int(raw.get("duplicates_across_splits", 0), path, "duplicates_across_splits")
        out[d] = InputInfo(skipped, dups, (folder / "skipped.csv").as_posix(), str(raw.get("split_description", "")))
    return out


# --------------------------------------------------------------------------- attention maps


@dataclass(frozen=True)
class AttentionRun:
    """One run's attention folder (written by evaluate, see :mod:`attention_cnn.evaluation.attention_maps`): its
    checked index.json and the PNG bytes of its image sets (``fixed``, ``misclassified``)."""

    dataset: str
    variant: str
    seed: int
    index: dict[str, Any]
    images: dict[str, bytes]


def load_attention(eval_dir, datasets: Iterable[str], variants: Iterable[str],
                   seed: int) -> dict[tuple[str, str], AttentionRun]:
    """``{(dataset, variant): AttentionRun}`` of one seed (the report's first), every selected pair; a
    missing or malformed folder is a one-line error."""
    out = {}
    for d, v, s in combos(datasets, variants, [seed]):
        folder = runs.run_dir(eval_dir, d, v, s) / runs.ATTENTION_DIR
        index = attention_maps.read_index(folder)
        for key, want in (("dataset", d), ("variant", v), ("seed", s)):
            if index[key] != want:
                raise StageError(f"{folder / attention_maps.INDEX_FILE}: '{key}' is {index[key]!r} "
                                 f"but the file's location says {want!r}")
        images = {name: (folder / file).read_bytes() for name, file in sorted(index["images"].items())}
        out[(d, v)] = AttentionRun(d, v, s, index, images)
    return out
