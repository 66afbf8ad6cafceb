"""Report stage: gather per-run metrics and histories into tables, plots and a report.

Reads, for every (dataset, variant, seed) named in ``params.yaml``::

    {eval_dir}/{d}/{v}/seed{s}/metrics.json
    {eval_dir}/{d}/{v}/seed{s}/predictions.csv   (confusion matrices: first seed; paired tests: every seed)
    {train_dir}/{d}/{v}/seed{s}/history.csv
    {raw_dir}/{d}/source.json                    (skipped input files, train/test split; absent: 0)
    {eval_dir}/{d}/{v}/seed{s}/attention/        index.json + PNGs of the attention maps (first seed)

and writes into ``out_dir``::

    results.csv                      one row per dataset x variant x seed (+ test accuracy mean and sd over seeds)
    comparisons.csv                  each attention variant vs its no-attention baseline: paired bootstrap CI
                                     of the accuracy difference and exact McNemar p (see attention_cnn/report/stats.py)
    metrics.json                     {dataset: {variant: {mean metric: value}}} for `dvc exp show`
    plots/learning_curves_{d}.csv    long format for DVC plots
    plots/timing.csv                 mean train time and p50 latency per dataset x variant
    figures/*.png                    learning curves, confusion matrices, timing, accuracy, and the
                                     attention maps copied from evaluate (attention_{d}_{v}_{set}.png)
    report.md                        tables + figures referenced as figures/*.png
    report.html                      the same, self-contained (figures embedded as base64)

Everything is computed first and written only when all inputs were read, so a
missing or malformed input leaves the previous outputs untouched. Output is
deterministic: rows are sorted, figure sizes fixed, PNGs carry no timestamp or
software tag, and the bootstrap draws from a fixed seed (``--bootstrap-seed``).

Usage::

    python -m attention_cnn.report.report --params params.yaml --eval-dir reports/eval \
        --train-dir reports/train --raw-dir data/raw --out-dir reports \
        [--n-boot 10000] [--bootstrap-seed 0] [--alpha 0.05]
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import html
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "attention_cnn.report.report"

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from attention_cnn.evaluation import attention_maps

from attention_cnn.report import stats  # noqa: E402
from attention_cnn.common import (  # noqa: E402
    StageError,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    get_param,
    load_params,
    run_main,
    write_csv_rows,
)

# --------------------------------------------------------------------------- constants

RECORD_COLUMNS = [
    "dataset", "variant", "seed", "source", "features", "params", "epochs_run", "train_time_s",
    "test_time_ms", "latency_ms_p50", "latency_ms_p95", "test_loss", "test_accuracy",
    "best_val_accuracy", "model_size_bytes", "num_test",
]
# results.csv: the per-run record, then the test accuracy's mean and sample sd over the seeds of the same
# dataset x variant (repeated on each of its rows; the sd is empty for a single seed).
RESULT_COLUMNS = RECORD_COLUMNS + ["test_accuracy_mean", "test_accuracy_sd"]
COMPARISON_COLUMNS = [
    "dataset", "variant", "baseline", "delta_accuracy", "ci_low", "ci_high", "mcnemar_p",
    "seeds", "n_pairs", "baseline_only_correct", "variant_only_correct",
]
INT_COLUMNS = ("seed", "params", "epochs_run", "model_size_bytes", "num_test")
FLOAT_COLUMNS = (
    "train_time_s", "test_time_ms", "latency_ms_p50", "latency_ms_p95",
    "test_loss", "test_accuracy", "best_val_accuracy",
)
NULLABLE_COLUMNS = ("best_val_accuracy",)
METRICS_REQUIRED_KEYS = (
    "dataset", "variant", "seed", "source", "params", "model_size_bytes", "epochs_run",
    "train_time_s", "test_time_ms", "latency_ms_p50", "latency_ms_p95", "test_loss",
    "test_accuracy", "best_val_accuracy", "num_test", "class_names", "per_class",
)
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
PREDICTION_COLUMNS = ("index", "actual", "predicted", "confidence")
CURVE_COLUMNS = ["epoch", "variant", "seed", "split", "accuracy", "loss"]
TIMING_COLUMNS = ["dataset", "variant", "train_time_s", "latency_ms_p50"]

# Means written to metrics.json and how many decimals each keeps.
SUMMARY_ROUNDING = {
    "test_accuracy": 4,
    "test_loss": 4,
    "train_time_s": 3,
    "latency_ms_p50": 3,
}

BASELINE_VARIANT = "cnn"

# Each attention variant and the variant without attention it is tested against: the same backbone, data
# and seeds. The one place that says so; a variant not listed here but named `<backbone>_<block>` is
# compared with `<backbone>` (see baseline_of).
BASELINE_OF: dict[str, str] = {
    "cnn_attention": "cnn",
    "cnn_se": "cnn",
    "cnn_cbam": "cnn",
    "cnn_mhsa": "cnn",
    "resnet_se": "resnet",
    "resnet_cbam": "resnet",
}
# What each variant adds, for the report's opening paragraph.
VARIANT_NOTES: dict[str, str] = {
    "cnn_se": "a squeeze-and-excitation block (channel attention) after the first convolution",
    "cnn_cbam": "CBAM (channel, then spatial attention) after the first convolution",
    "cnn_mhsa": "multi-head self-attention (query, key, value, softmax) over a pooled copy of the first "
                "convolution's feature map, added back",
    "resnet": "a small ResNet (3 residual stages with batch normalization, global average pooling): "
              "a stronger baseline without attention",
    "resnet_se": "the small ResNet with a squeeze-and-excitation block in every residual block",
    "resnet_cbam": "the small ResNet with CBAM in every residual block",
}
N_BOOT = 10000
BOOTSTRAP_SEED = 0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

TITLE = "Does attention help a small CNN?"
SD_BAND = ", band = \u00b1 1 sd"

# The numbers the original study published (one run per model, hosted notebook,
# test set used as validation data); see shared/STUDY.md. Keyed by the lower-case
# data-set name used in params.yaml.
STUDY_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "mnist": {
        "cnn": {"train_time_s": 83.3, "epochs": 15, "test_time_ms": 901.9,
                "test_loss": 0.057, "test_accuracy_pct": 98.6},
        "cnn_attention": {"train_time_s": 52.4, "epochs": 15, "test_time_ms": 921.8,
                          "test_loss": 0.048, "test_accuracy_pct": 98.5},
    },
    "speech": {
        "cnn": {"train_time_s": 70.3, "epochs": 12, "test_time_ms": 313.3,
                "test_loss": 2.938, "test_accuracy_pct": 81.0},
        "cnn_attention": {"train_time_s": 53.6, "epochs": 7, "test_time_ms": 637.8,
                          "test_loss": 0.692, "test_accuracy_pct": 84.7},
    },
}
# The study's published accuracy gaps (variant - baseline, points; one run each, no test).
STUDY_GAPS: dict[tuple[str, str, str], float] = {
    (d, v, base): round(runs[v]["test_accuracy_pct"] - runs[base]["test_accuracy_pct"], 1)
    for d, runs in STUDY_RESULTS.items() for v, base in [("cnn_attention", "cnn")]
}
STUDY_NOTE = (
    "The study's numbers come from a single run per model on a hosted notebook "
    "(different hardware, so times are not comparable), and the study used the test "
    "set as validation data, so its early stopping and 'best' accuracies saw the test set."
)

FIG_DPI = 100
PNG_METADATA = {"Software": None}
RC = {
    "svg.hashsalt": "attention_cnn.report.report",
    "figure.dpi": FIG_DPI,
    "savefig.dpi": FIG_DPI,
    "font.family": "DejaVu Sans",
    "axes.titlesize": 11,
}

# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class Selection:
    """Which runs to report, in params.yaml order."""

    datasets: tuple[str, ...]
    variants: tuple[str, ...]
    seeds: tuple[int, ...]


def _name_list(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise StageError(f"params.yaml: '{key}' must be a non-empty list")
    out = []
    for item in value:
        if not isinstance(item, str) or not NAME_RE.match(item):
            raise StageError(
                f"params.yaml: '{key}' entries must be names made of letters, digits, '_', '.', '-' (got {item!r})"
            )
        if item in out:
            raise StageError(f"params.yaml: '{key}' lists {item!r} twice")
        out.append(item)
    return tuple(out)


def selection_from_params(params: dict[str, Any]) -> Selection:
    datasets = _name_list(get_param(params, "datasets"), "datasets")
    variants = _name_list(get_param(params, "variants"), "variants")
    seeds_raw = get_param(params, "train.seeds")
    if not isinstance(seeds_raw, list) or not seeds_raw:
        raise StageError("params.yaml: 'train.seeds' must be a non-empty list of integers")
    seeds: list[int] = []
    for s in seeds_raw:
        if isinstance(s, bool) or not isinstance(s, int):
            raise StageError(f"params.yaml: 'train.seeds' entries must be integers (got {s!r})")
        if s in seeds:
            raise StageError(f"params.yaml: 'train.seeds' lists {s} twice")
        seeds.append(s)
    return Selection(datasets, variants, tuple(seeds))


# --------------------------------------------------------------------------- paths and loading


def run_dir(root: Union[str, Path], dataset: str, variant: str, seed: int) -> Path:
    return Path(root) / dataset / variant / f"seed{seed}"


def _missing(path: Path) -> StageError:
    return StageError(f"{path}: not found; run `dvc repro` to produce it")


def _combos(datasets: Iterable[str], variants: Iterable[str], seeds: Iterable[int]):
    """All (dataset, variant, seed) combinations, sorted as the tables are."""
    return sorted((d, v, int(s)) for d in datasets for v in variants for s in seeds)


def _as_int(value: Any, path: Path, key: str) -> int:
    if isinstance(value, bool):
        raise StageError(f"{path}: '{key}' must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise StageError(f"{path}: '{key}' must be an integer, got {value!r}")


def _as_float(value: Any, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StageError(f"{path}: '{key}' must be a number, got {value!r}")
    return float(value)


def load_run_metrics(eval_dir: Union[str, Path], dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """Read and validate one run's metrics.json; returns a normalised dict."""
    path = run_dir(eval_dir, dataset, variant, seed) / "metrics.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise StageError(f"{path}: expected a JSON object")
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
    for key in INT_COLUMNS:
        if key != "seed":
            rec[key] = _as_int(raw[key], path, key)
    for key in FLOAT_COLUMNS:
        # null: the run had no validation data (train.validation_fraction: 0), empty in results.csv
        rec[key] = math.nan if (key in NULLABLE_COLUMNS and raw[key] is None) else _as_float(raw[key], path, key)

    names = raw["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StageError(f"{path}: 'class_names' must be a list of strings")
    per_class = raw["per_class"]
    if not isinstance(per_class, dict):
        raise StageError(f"{path}: 'per_class' must be an object keyed by class name")
    cleaned: dict[str, dict[str, float]] = {}
    for cls, stats in per_class.items():
        if not isinstance(stats, dict):
            raise StageError(f"{path}: per_class[{cls!r}] must be an object")
        cleaned[str(cls)] = {
            k: _as_float(stats[k], path, f"per_class.{cls}.{k}") if k in stats else math.nan
            for k in ("precision", "recall", "support")
        }
    rec["class_names"] = list(names)
    rec["per_class"] = cleaned
    return rec


def load_all_metrics(eval_dir, datasets, variants, seeds) -> list[dict[str, Any]]:
    """Every selected run's metrics, sorted by (dataset, variant, seed)."""
    return [load_run_metrics(eval_dir, d, v, s) for d, v, s in _combos(datasets, variants, seeds)]


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
            stats = r["per_class"].get(cls, {})
            rows.append({
                "dataset": r["dataset"], "variant": r["variant"], "seed": r["seed"], "class": cls,
                "precision": stats.get("precision", math.nan),
                "recall": stats.get("recall", math.nan),
                "support": stats.get("support", math.nan),
            })
    return pd.DataFrame(rows, columns=["dataset", "variant", "seed", "class", "precision", "recall", "support"])


def _read_csv(path: Path, required: Sequence[str], **kwargs) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, float_precision="round_trip", **kwargs)
    except FileNotFoundError:
        raise _missing(path) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StageError(f"{path}: cannot read CSV ({msg})") from None
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise StageError(f"{path}: missing column(s) {', '.join(absent)}")
    return df


def load_history(train_dir, dataset: str, variant: str, seed: int) -> pd.DataFrame:
    """One run's history.csv, validated (numeric columns, integer epochs)."""
    path = run_dir(train_dir, dataset, variant, seed) / "history.csv"
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
    """Long learning-curve table: dataset, variant, seed, epoch, split, accuracy, loss (sorted)."""
    parts = [long_history(load_history(train_dir, d, v, s), d, v, s) for d, v, s in _combos(datasets, variants, seeds)]
    cols = ["dataset", "variant", "seed", "epoch", "split", "accuracy", "loss"]
    df = pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
    df = df.sort_values(["dataset", "variant", "seed", "split", "epoch"], kind="mergesort")
    return df.reset_index(drop=True)


def load_predictions(eval_dir, dataset: str, variant: str, seed: int) -> pd.DataFrame:
    """One run's predictions.csv with actual/predicted kept as strings."""
    path = run_dir(eval_dir, dataset, variant, seed) / "predictions.csv"
    return _read_csv(path, PREDICTION_COLUMNS, dtype={"actual": str, "predicted": str}, keep_default_na=False)


def confusion_matrix(predictions: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Counts with actual classes as rows and predicted classes as columns.

    Labels not in ``class_names`` are appended (sorted) so nothing is silently dropped.
    """
    labels = list(class_names)
    extra = sorted((set(predictions["actual"]) | set(predictions["predicted"])) - set(labels))
    labels += extra
    index = {name: i for i, name in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for a, p in zip(predictions["actual"], predictions["predicted"]):
        counts[index[a]][index[p]] += 1
    cm = pd.DataFrame(counts, index=pd.Index(labels, name="actual"), columns=pd.Index(labels, name="predicted"))
    return cm


# --------------------------------------------------------------------------- paired comparisons


def baseline_of(variant: str) -> str | None:
    """The no-attention variant ``variant`` is tested against: :data:`BASELINE_OF`, else the naming rule
    ``<backbone>_<block>`` -> ``<backbone>``; None for a baseline itself (``cnn``, ``resnet``)."""
    if variant in BASELINE_OF:
        return BASELINE_OF[variant]
    backbone, sep, _ = variant.partition("_")
    return backbone if sep and backbone else None


def comparison_pairs(variants: Iterable[str]) -> list[tuple[str, str]]:
    """``(variant, baseline)`` for every selected variant whose baseline is selected too, sorted."""
    chosen = set(variants)
    return sorted((v, b) for v in chosen if (b := baseline_of(v)) is not None and b in chosen and b != v)


def paired_correctness(pred_a: pd.DataFrame, pred_b: pd.DataFrame, path_a: Path, path_b: Path):
    """Two boolean vectors (A right?, B right?) over the same test examples, joined on ``index``."""
    for pred, path in ((pred_a, path_a), (pred_b, path_b)):
        index = pd.to_numeric(pred["index"], errors="coerce")
        if index.isna().any() or not (index % 1 == 0).all():
            raise StageError(f"{path}: column 'index' must hold whole numbers")
        if index.duplicated().any():
            raise StageError(f"{path}: test example index {int(index[index.duplicated()].iloc[0])} appears twice")
    a = pred_a.assign(index=pred_a["index"].astype("int64")).set_index("index")
    b = pred_b.assign(index=pred_b["index"].astype("int64")).set_index("index")
    if set(a.index) != set(b.index):
        raise StageError(f"{path_a} and {path_b} are not on the same test examples "
                         f"({len(set(a.index) ^ set(b.index))} indices differ); rerun `dvc repro`")
    b = b.loc[a.index]
    if not (a["actual"] == b["actual"]).all():
        raise StageError(f"{path_a} and {path_b} disagree on the true labels of the same test examples; "
                         "rerun `dvc repro`")
    return (a["actual"] == a["predicted"]).to_numpy(), (b["actual"] == b["predicted"]).to_numpy()


def compare_variants(eval_dir, sel: Selection, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED,
                     predictions: dict[tuple[str, str, int], pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per data set x (attention variant, baseline): COMPARISON_COLUMNS.

    For each seed, the variant's and the baseline's predictions of that seed are joined on ``index``; the
    per-seed paired correctness vectors are concatenated (pooled over seeds, see :mod:`attention_cnn.report.stats`) and
    give the accuracy difference (variant - baseline, a fraction), its paired bootstrap CI and the exact
    McNemar p-value. ``predictions``: already loaded files by (dataset, variant, seed), read otherwise.
    """
    cache = dict(predictions or {})

    def get(d: str, v: str, s: int) -> pd.DataFrame:
        if (d, v, s) not in cache:
            cache[(d, v, s)] = load_predictions(eval_dir, d, v, s)
        return cache[(d, v, s)]

    rows = []
    seeds = sorted(sel.seeds)
    for d in sorted(sel.datasets):
        for v, base in comparison_pairs(sel.variants):
            parts_a, parts_b = [], []
            for s in seeds:
                a, b = paired_correctness(get(d, base, s), get(d, v, s),
                                          run_dir(eval_dir, d, base, s) / "predictions.csv",
                                          run_dir(eval_dir, d, v, s) / "predictions.csv")
                parts_a.append(a)
                parts_b.append(b)
            correct_a, correct_b = np.concatenate(parts_a), np.concatenate(parts_b)
            delta, low, high = stats.paired_bootstrap_delta(correct_a, correct_b, n_boot=n_boot, seed=seed)
            only_base, only_variant = stats.discordant_counts(correct_a, correct_b)
            rows.append({
                "dataset": d, "variant": v, "baseline": base,
                "delta_accuracy": round(delta, 6), "ci_low": round(low, 6), "ci_high": round(high, 6),
                "mcnemar_p": float(f"{stats.mcnemar_exact_counts(only_base, only_variant):.6g}"),
                "seeds": " ".join(str(s) for s in seeds), "n_pairs": len(correct_a),
                "baseline_only_correct": only_base, "variant_only_correct": only_variant,
            })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _points(fraction: float, decimals: int = 1) -> str:
    return _signed(fraction * 100, decimals)


def fmt_p(p: float) -> str:
    """``p = 0.21``, ``p = 0.039``, ``p < 0.001``."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.1 else f"p = {p:.3f}"


def verdict_line(row: Any, alpha: float = stats.ALPHA) -> str:
    """``cnn_attention vs cnn on speech: +2.5 points (95% CI −1.0 to +6.0), McNemar p = 0.21: no significant
    difference at α = 0.05``, from one comparisons row."""
    return (f"{row.variant} vs {row.baseline} on {row.dataset}: {_points(row.delta_accuracy)} points "
            f"(95% CI {_points(row.ci_low)} to {_points(row.ci_high)}), McNemar {fmt_p(row.mcnemar_p)}: "
            f"{stats.verdict(row.delta_accuracy, row.ci_low, row.ci_high, row.mcnemar_p, alpha)}")


def study_gap_text(row: Any) -> str:
    gap = STUDY_GAPS.get((str(row.dataset).lower(), row.variant, row.baseline))
    return "" if gap is None else f"{_signed(gap, 1)} points"


def verdict_lines(comparisons: pd.DataFrame, dataset: str | None = None, alpha: float = stats.ALPHA) -> list[str]:
    """A verdict sentence per comparison (of one data set, or all), with the study's gap where it published one."""
    lines = []
    for row in comparisons.itertuples(index=False):
        if dataset is not None and row.dataset != dataset:
            continue
        line = verdict_line(row, alpha) + "."
        gap = study_gap_text(row)
        if gap:
            line += f" The study published {gap} (one run each, no test)."
        lines.append(line)
    return lines


def comparisons_table(comparisons: pd.DataFrame, alpha: float = stats.ALPHA) -> tuple[list[str], list[list[str]]]:
    header = ["data set", "variant", "baseline", "seeds", "Δ accuracy (points)", "95% CI (points)",
              "McNemar p", "only baseline right", "only variant right", "verdict", "study's Δ (1 run)"]
    rows = []
    for r in comparisons.itertuples(index=False):
        rows.append([r.dataset, f"`{r.variant}`", f"`{r.baseline}`", str(r.seeds).replace(" ", ", "),
                     _points(r.delta_accuracy, 2), f"{_points(r.ci_low, 2)} to {_points(r.ci_high, 2)}",
                     fmt_p(r.mcnemar_p).removeprefix("p = ").removeprefix("p "), str(r.baseline_only_correct),
                     str(r.variant_only_correct),
                     stats.verdict(r.delta_accuracy, r.ci_low, r.ci_high, r.mcnemar_p, alpha),
                     study_gap_text(r) or "—"])
    return header, rows


# --------------------------------------------------------------------------- attention maps (issue #5)


@dataclass(frozen=True)
class AttentionRun:
    """One run's attention folder (written by evaluate, see :mod:`attention_cnn.evaluation.attention_maps`): its checked
    index.json and the PNG bytes of its image sets (``fixed``, ``misclassified``)."""

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
    for d, v, s in _combos(datasets, variants, [seed]):
        folder = run_dir(eval_dir, d, v, s) / "attention"
        index = attention_maps.read_index(folder)
        for key, want in (("dataset", d), ("variant", v), ("seed", s)):
            if index[key] != want:
                raise StageError(f"{folder / attention_maps.INDEX_FILE}: '{key}' is {index[key]!r} "
                                 f"but the file's location says {want!r}")
        images = {name: (folder / file).read_bytes() for name, file in sorted(index["images"].items())}
        out[(d, v)] = AttentionRun(d, v, s, index, images)
    return out


def attention_figure_path(dataset: str, variant: str, set_name: str) -> str:
    return f"figures/attention_{dataset}_{variant}_{set_name}.png"


def attention_images(attention: dict[tuple[str, str], AttentionRun]) -> dict[str, bytes]:
    """The attention PNGs by their path in the report (copied into figures/)."""
    return {attention_figure_path(d, v, name): data
            for (d, v), run in sorted(attention.items()) for name, data in run.images.items()}


def attention_section(attention: dict[tuple[str, str], AttentionRun], sel: Selection) -> list[Block]:
    """"Attention maps": per data set x attention variant (first seed), the maps of the fixed examples and,
    beside their inputs, of the examples the model got wrong. [] when no run has attention blocks (and no
    attention variant lacks them)."""
    if not attention:
        return []
    seed = sel.seeds[0]
    blocks: list[Block] = [Heading(2, "Attention maps"), Para(
        "What the attention blocks weight, drawn by the evaluate stage from the trained model (seed "
        f"{seed}) over the input: for the first few test examples of each class (the same examples for "
        "every variant) and for the first test examples the model got wrong, each row an example (labelled "
        "true class, or true \u2192 predicted class and confidence), its input, then one overlay per "
        "attention block (colour map turbo: blue low, red high; no colour where the map does not reach). "
        "Spectrograms are drawn as log(1 + |STFT|), time across and frequency up. Each map's range in "
        "its own units is under it; the numbers are in "
        f"reports/eval/<data set>/<variant>/seed{seed}/attention/index.json.")]
    missing = []
    for (d, v), run in sorted(attention.items()):
        index = run.index
        if not index["blocks"]:
            if baseline_of(v) is not None:
                missing.append(f"{d} / `{v}`")
            continue
        blocks.append(Heading(3, f"{d} / {v} (seed {run.seed})"))
        kinds: dict[str, list[str]] = {}
        for b in index["blocks"]:
            kinds.setdefault(str(b.get("kind")), []).append(str(b.get("name")))
        for kind, names in kinds.items():
            shows = attention_maps.SHOWS.get(kind, "")
            listed = ", ".join(f"`{n}`" for n in names)
            label = attention_maps.KIND_NAMES.get(kind, kind)
            blocks.append(Para(f"{label} ({listed}): the map is {shows}."))
        if "fixed" in run.images:
            k = index.get("examples_per_class", 1)
            blocks.append(Figure(attention_figure_path(d, v, "fixed"),
                                 f"{d} / {v}: attention maps of the first "
                                 f"{f'{k} test examples' if k != 1 else 'test example'} of each class"))
        total, shown = int(index["misclassified_total"]), len(index["misclassified"])
        if total == 0:
            blocks.append(Para(f"`{v}` got every {d} test example right: no misclassified example to show."))
        elif "misclassified" in run.images:
            blocks.append(Figure(attention_figure_path(d, v, "misclassified"),
                                 f"{d} / {v}: the examples the model got wrong (the first {shown} of {total} in "
                                 "test order), each beside its attention maps"))
        else:
            blocks.append(Para(f"`{v}` got {total} {d} test example{'s' if total != 1 else ''} wrong; none drawn "
                               "(evaluate.attention_max_misclassified is 0)."))
    if missing:
        blocks.append(Para("Warning: no attention block was found in the model of " + _and(missing)
                           + ", so no map is shown for it (attention_cnn/evaluation/attention_maps.py recognises the blocks of "
                           "attention_cnn/models/blocks.py)."))
    if len(blocks) == 2 and not missing:
        return []  # only variants without attention
    return blocks


# --------------------------------------------------------------------------- summaries


def _clean_number(x: Any, decimals: int) -> float | None:
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return None
    value = round(x, decimals)
    return 0.0 if value == 0 else value  # no "-0.0"


def summary_metrics(df: pd.DataFrame) -> dict[str, dict[str, dict[str, float | None]]]:
    """{dataset: {variant: {metric: mean over seeds}}}, rounded per SUMMARY_ROUNDING."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    means = df.groupby(["dataset", "variant"], sort=True)[list(SUMMARY_ROUNDING)].mean()
    for (dataset, variant), row in means.iterrows():
        out.setdefault(str(dataset), {})[str(variant)] = {
            k: _clean_number(row[k], d) for k, d in SUMMARY_ROUNDING.items()
        }
    return out


def timing_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Mean train time and p50 latency per dataset x variant (rounded to 3 decimals)."""
    t = df.groupby(["dataset", "variant"], sort=True)[["train_time_s", "latency_ms_p50"]].mean().reset_index()
    for c in ("train_time_s", "latency_ms_p50"):
        t[c] = t[c].round(3)
    return t[TIMING_COLUMNS]


def curves_for_dataset(histories: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The learning-curve rows of one data set, columns CURVE_COLUMNS, sorted."""
    sub = histories[histories["dataset"] == dataset]
    sub = sub.sort_values(["variant", "seed", "split", "epoch"], kind="mergesort")
    return sub[CURVE_COLUMNS].reset_index(drop=True)


def baseline_for(variants: Sequence[str]) -> str:
    return BASELINE_VARIANT if BASELINE_VARIANT in variants else variants[0]


def _signed(x: float, decimals: int) -> str:
    if math.isnan(x):
        return "n/a"
    s = f"{x:+.{decimals}f}"
    return s[1:] if float(s) == 0 else s.replace("-", "\u2212")


def difference_lines(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> list[str]:
    """Plain-words attention-vs-baseline lines for one data set (no significance claims; see verdict_lines).

    Each attention variant is set against its own baseline (:func:`baseline_of`), in ``variants`` order.
    """
    sub = df[df["dataset"] == dataset]
    lines = []
    baselines = dict(comparison_pairs(variants))
    for v in variants:
        if v not in baselines:
            continue
        base = baselines[v]
        b = sub[sub["variant"] == base].set_index("seed")
        o = sub[sub["variant"] == v].set_index("seed")
        seeds = sorted(set(b.index) & set(o.index))
        if not seeds:
            continue
        acc = [(o.at[s, "test_accuracy"] - b.at[s, "test_accuracy"]) * 100 for s in seeds]
        loss = [o.at[s, "test_loss"] - b.at[s, "test_loss"] for s in seeds]
        mean_acc = statistics.fmean(acc)
        n = len(seeds)
        runs = f"over {n} seeds" if n > 1 else "over 1 seed (a single run)"
        line = f"`{v}` \u2212 `{base}`: {_signed(mean_acc, 2)} points test accuracy {runs}"
        if n > 1:
            line += f" (per-seed differences {', '.join(_signed(a, 2) for a in acc)})"
        line += f"; test loss {_signed(statistics.fmean(loss), 4)}"
        bt, ot = b.loc[seeds, "train_time_s"].mean(), o.loc[seeds, "train_time_s"].mean()
        if bt > 0:
            line += f"; mean train time {ot / bt:.2f}\u00d7 the baseline's"
        line += ". This is a difference of means, not a significance test."
        lines.append(line)
    return lines


# --------------------------------------------------------------------------- formatting


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def fmt_stat(values: Iterable[Any], decimals: int, scale: float = 1.0) -> str:
    """'mean ± sd' (sample sd) over seeds, or just the value for a single seed."""
    vals = [v * scale for v in _finite(values)]
    if not vals:
        return "n/a"
    mean = statistics.fmean(vals)
    if len(vals) > 1:
        return f"{mean:.{decimals}f} \u00b1 {statistics.stdev(vals):.{decimals}f}"
    return f"{mean:.{decimals}f}"


def fmt_mean(values: Iterable[Any], decimals: int) -> str:
    vals = _finite(values)
    return f"{statistics.fmean(vals):.{decimals}f}" if vals else "n/a"


def fmt_count(values: Iterable[Any]) -> str:
    """An integer that should not vary over seeds: shown once, or 'mean ± sd' if it does."""
    vals = _finite(values)
    if not vals:
        return "n/a"
    if len(set(vals)) == 1:
        return f"{int(vals[0]):,}"
    return fmt_stat(vals, 1)


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fmt_sources(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def comparison_table(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "seeds", "test accuracy (%)", "test loss", "train time (s)", "test time (ms)",
              "p50 latency (ms)", "params", "epochs", "features", "source"]
    rows = []
    sub = df[df["dataset"] == dataset]
    for v in variants:
        r = sub[sub["variant"] == v]
        rows.append([
            f"`{v}`", str(len(r)), fmt_stat(r["test_accuracy"], 2, 100.0), fmt_stat(r["test_loss"], 4),
            fmt_stat(r["train_time_s"], 1), fmt_stat(r["test_time_ms"], 1), fmt_stat(r["latency_ms_p50"], 2),
            fmt_count(r["params"]), fmt_count(r["epochs_run"]), fmt_sources(r["features"]) or "-",
            fmt_sources(r["source"]),
        ])
    return header, rows


def study_table(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> tuple[list[str], list[list[str]]] | None:
    study = STUDY_RESULTS.get(dataset.lower())
    if study is None:
        return None
    header = ["variant", "run", "test accuracy (%)", "test loss", "train time (s)", "test time (ms)", "epochs"]
    rows = []
    sub = df[df["dataset"] == dataset]
    for v in variants:
        pub = study.get(v)
        if pub is not None:
            rows.append([f"`{v}`", "study (1 run, hosted notebook)", f"{pub['test_accuracy_pct']:.1f}",
                         f"{pub['test_loss']:.3f}", f"{pub['train_time_s']:.1f}", f"{pub['test_time_ms']:.1f}",
                         str(pub["epochs"])])
        r = sub[sub["variant"] == v]
        n = len(r)
        rows.append([f"`{v}`", f"this pipeline ({'mean of ' + str(n) + ' seeds' if n > 1 else '1 run'})",
                     fmt_stat(r["test_accuracy"], 1, 100.0), fmt_stat(r["test_loss"], 3),
                     fmt_stat(r["train_time_s"], 1), fmt_stat(r["test_time_ms"], 1), fmt_count(r["epochs_run"])])
    return header, rows


def per_class_table(pc: pd.DataFrame, records: Sequence[dict[str, Any]], dataset: str,
                    variants: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["class", "support"]
    for v in variants:
        header += [f"`{v}` precision", f"`{v}` recall"]
    sub = pc[pc["dataset"] == dataset]
    rows = []
    for cls in class_order(records, dataset):
        c = sub[sub["class"] == cls]
        support = _finite(c["support"])
        row = [cls, (f"{statistics.fmean(support):g}" if support else "n/a")]
        for v in variants:
            cv = c[c["variant"] == v]
            row += [fmt_mean(cv["precision"], 3), fmt_mean(cv["recall"], 3)]
        rows.append(row)
    return header, rows


def runs_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "variant", "seed", "source", "test accuracy (%)", "test loss", "epochs", "train time (s)"]
    rows = [[r.dataset, f"`{r.variant}`", str(r.seed), r.source, f"{r.test_accuracy * 100:.2f}",
             f"{r.test_loss:.4f}", str(r.epochs_run), f"{r.train_time_s:.1f}"]
            for r in df.itertuples(index=False)]
    return header, rows


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    path: str  # relative to out_dir, e.g. "figures/timing.png"
    caption: str


Block = Union[Heading, Para, Bullets, Table, Figure]


def _table(spec: tuple[list[str], list[list[str]]], caption: str = "") -> Table:
    header, rows = spec
    return Table(tuple(header), tuple(tuple(r) for r in rows), caption)


@dataclass
class FigureSet:
    """Relative figure paths by role; filled by :func:`figure_paths`."""

    learning: dict[str, str] = field(default_factory=dict)
    confusion: dict[tuple[str, str], str] = field(default_factory=dict)
    timing: str = "figures/timing.png"
    accuracy: str = "figures/accuracy.png"

    def all(self) -> list[str]:
        return sorted([*self.learning.values(), *self.confusion.values(), self.timing, self.accuracy])


def figure_paths(sel: Selection) -> FigureSet:
    fs = FigureSet()
    for d in sel.datasets:
        fs.learning[d] = f"figures/learning_curves_{d}.png"
        for v in sel.variants:
            fs.confusion[(d, v)] = f"figures/confusion_{d}_{v}.png"
    return fs


def build_report(df: pd.DataFrame, per_class: pd.DataFrame, records: Sequence[dict[str, Any]],
                 sel: Selection, figures: FigureSet, inputs: dict[str, InputInfo] | None = None,
                 comparisons: pd.DataFrame | None = None, alpha: float = stats.ALPHA,
                 n_boot: int = N_BOOT, attention: dict[tuple[str, str], AttentionRun] | None = None) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and HTML alike.

    ``comparisons``: :func:`compare_variants`'s table; without it the report has no paired tests.
    ``attention``: :func:`load_attention`'s runs; without it the report has no attention maps.
    """
    inputs = inputs or {}
    comparisons = comparisons if comparisons is not None else pd.DataFrame(columns=COMPARISON_COLUMNS)
    datasets = sorted(sel.datasets)
    variants = sorted(sel.variants)
    seeds = sorted(sel.seeds)
    n = len(seeds)
    base = baseline_for(variants)
    blocks: list[Block] = [
        Heading(1, TITLE),
        Para(
            "Research question: does a simple spatial-attention gate help a small CNN? The gate is one "
            "3\u00d73 convolution with a sigmoid whose single-channel output multiplies the first "
            "convolution's feature maps; everything else is the same network. This report compares "
            f"{_and([f'`{v}`' for v in variants])} on {_and(datasets)}, "
            f"each trained with {n} seed{'s' if n != 1 else ''} ({', '.join(str(s) for s in seeds)}), "
            "and sets the results beside the numbers the original 2023 course study published."
        ),
    ]
    notes = [f"`{v}` adds {VARIANT_NOTES[v]}" for v in variants if v in VARIANT_NOTES]
    if notes:
        blocks.append(Para("Beyond the study: " + "; ".join(notes) + ". Each attention variant is tested against "
                           "the variant without attention on the same backbone: "
                           + ", ".join(f"`{v}` vs `{b}`" for v, b in comparison_pairs(variants)) + "."))
    blocks += [
        Para(
            "How to read the tables: values are the mean over seeds, followed by \u00b1 the sample standard "
            "deviation when there is more than one seed. Test time is the wall time to evaluate the whole "
            "test set; p50 latency is the median time to predict a single example. Times depend on the "
            "machine that ran the pipeline. The source column says which data source each row came from."
        ),
        Heading(2, "Summary"),
    ]
    summary_items = []
    for d in datasets:
        for line in difference_lines(df, d, variants) or [f"only `{base}` was run, nothing to compare"]:
            summary_items.append(f"{d}: {line}")
    summary_items += verdict_lines(comparisons, alpha=alpha)
    blocks.append(Bullets(tuple(summary_items)))

    if len(comparisons):
        blocks.append(Heading(2, "Is the difference real? Paired tests"))
        blocks.append(Para(
            "Both models of a comparison were tested on the same examples, so they are compared example by "
            "example: the predictions of the same seed are joined on the test example's index, and the "
            "seeds are pooled by concatenating these pairs. Δ is the variant's accuracy minus the "
            f"baseline's. The 95% confidence interval comes from a paired bootstrap ({n_boot:,} resamples of "
            "the example pairs, fixed seed); the p-value from the exact McNemar test, a two-sided binomial "
            "test on the examples exactly one of the two models got right. A difference is called "
            f"significant when p < {alpha:g}. The pooled tests treat every (seed, example) pair as one "
            "observation; the spread between seeds is the ± sd in the tables below. The study's "
            "published differences come from one run per model and had no test."
        ))
        blocks.append(_table(comparisons_table(comparisons, alpha),
                             "Each attention variant against its baseline without attention (reports/comparisons.csv)"))

    for d in datasets:
        sub = df[df["dataset"] == d]
        blocks.append(Heading(2, f"Data set: {d}"))
        blocks.append(_table(comparison_table(df, d, variants), f"{d}: this pipeline, per variant"))
        sources = sorted(set(sub["source"]))
        if len(sources) == 1:
            blocks.append(Para(f"Every {d} row came from the data source `{sources[0]}`."))
        else:
            detail = "; ".join(
                f"`{v}`: {fmt_sources(sub[sub['variant'] == v]['source'])}" for v in variants
            )
            blocks.append(Para(
                f"Warning: the {d} rows came from different data sources ({detail}), "
                "so the variants were not compared on the same data."
            ))
        for line in input_lines(inputs.get(d)):
            blocks.append(Para(line))
        for line in difference_lines(df, d, variants):
            blocks.append(Para(line))
        for line in verdict_lines(comparisons, d, alpha):
            blocks.append(Para(line))

        blocks.append(Heading(3, "Compared with the published study"))
        st = study_table(df, d, variants)
        if st is None:
            blocks.append(Para(f"The study published no numbers for a data set called {d}."))
        else:
            blocks.append(_table(st, f"{d}: the study's published numbers beside this pipeline's"))
            blocks.append(Para(STUDY_NOTE))

        blocks.append(Heading(3, "Figures"))
        blocks.append(Figure(figures.learning[d],
                             f"{d}: accuracy and loss per epoch, train vs validation, per variant "
                             f"(mean over seeds{SD_BAND if n > 1 else ''})"))
        for v in variants:
            blocks.append(Figure(figures.confusion[(d, v)],
                                 f"{d} / {v}: confusion matrix on the test set (seed {sel.seeds[0]})"))

        blocks.append(Heading(3, "Per-class precision and recall"))
        blocks.append(_table(per_class_table(per_class, records, d, variants),
                             f"{d}: per-class precision and recall (mean over seeds)"))

    blocks += attention_section(attention or {}, sel)

    blocks.append(Heading(2, "Across data sets"))
    blocks.append(Figure(figures.accuracy, "Test accuracy per variant: each dot is one seed, the horizontal line is the mean"))
    blocks.append(Figure(figures.timing, "Mean training time and single-example p50 latency per data set and variant"))
    blocks.append(Heading(2, "All runs"))
    blocks.append(_table(runs_table(df), "Every run in this report and the data source it used"))
    return blocks


# --------------------------------------------------------------------------- input data


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
        skipped = _as_int(raw.get("skipped", 0), path, "skipped")
        dups = _as_int(raw.get("duplicates_across_splits", 0), path, "duplicates_across_splits")
        out[d] = InputInfo(skipped, dups, (folder / "skipped.csv").as_posix(), str(raw.get("split_description", "")))
    return out


def input_lines(info: InputInfo | None) -> list[str]:
    """Report sentences about one data set's input files."""
    info = info or InputInfo()
    lines = [f"Train/test split: {info.split}."] if info.split else []
    lines.append(f"Skipped input files: {info.skipped}"
                 + (f" (see {info.skipped_csv})." if info.skipped and info.skipped_csv else "."))
    if info.duplicates_across_splits:
        lines.append(f"Warning: {info.duplicates_across_splits} test recording(s) are byte-identical to train "
                     "recordings, so the test accuracy may be optimistic.")
    return lines


# --------------------------------------------------------------------------- rendering


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown with figures referenced as relative paths (figures/x.png)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = []
            if b.caption:
                lines += [f"*{b.caption}*", ""]
            lines.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.path})")
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {type(b).__name__}")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape text; `backticked` parts become <code>."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: keep them literally
        return html.escape(text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1rem}
caption{text-align:left;font-style:italic;padding-bottom:0.3rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left}
th{background:#f2f2f2}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1rem 0}
img{max-width:100%;height:auto}
figcaption{font-size:0.9rem;color:#555}
code{background:#f4f4f4;padding:0 0.2rem}
""".strip()


def render_html(blocks: Sequence[Block], images: dict[str, bytes], title: str = TITLE) -> str:
    """A self-contained HTML5 page; every figure is embedded as a data:image/png URI."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            items = "".join(f"<li>{_inline_html(i)}</li>" for i in b.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            cap = f"<caption>{_inline_html(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            rows = "\n".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table>")
        elif isinstance(b, Figure):
            if b.path not in images:
                raise ValueError(f"no image data for {b.path}")
            data = base64.b64encode(images[b.path]).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption, quote=True)}">'
                f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>"
            )
        else:  # pragma: no cover - defensive
            raise TypeError(f"unknown block {type(b).__name__}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- figures


def figure_png(fig) -> bytes:
    """PNG bytes of a figure without timestamp or software metadata; closes the figure."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=FIG_DPI, metadata=PNG_METADATA)
    finally:
        plt.close(fig)
    return buf.getvalue()


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """Fixed style for every figure (restores the global rcParams afterwards)."""
    with matplotlib.rc_context(RC), sns.axes_style("whitegrid"):
        yield


def plot_learning_curves(curves: pd.DataFrame, dataset: str, variants: Sequence[str]):
    """Accuracy and loss per epoch; hue = variant, line style = train/val; mean ± sd over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    multi_seed = curves["seed"].nunique() > 1
    for ax, metric in zip(axes, ("accuracy", "loss")):
        sns.lineplot(data=curves, x="epoch", y=metric, hue="variant", style="split",
                     hue_order=list(variants), style_order=["train", "val"], markers=True,
                     errorbar="sd" if multi_seed else None, legend="auto" if metric == "accuracy" else False,
                     ax=ax)
        ax.set_title(f"{dataset}: {metric}")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def plot_confusion(cm: pd.DataFrame, title: str):
    fig, ax = plt.subplots(figsize=(6, 5))
    sns.heatmap(cm, annot=len(cm) <= 20, fmt="d", cmap="Blues", square=True, cbar=True, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_timing(df: pd.DataFrame, datasets: Sequence[str], variants: Sequence[str]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    multi_seed = df.groupby(["dataset", "variant"]).size().max() > 1
    for ax, col, label in zip(axes, ("train_time_s", "latency_ms_p50"),
                              ("training time (s)", "p50 latency, one example (ms)")):
        sns.barplot(data=df, x="dataset", y=col, hue="variant", order=list(datasets),
                    hue_order=list(variants), errorbar="sd" if multi_seed else None,
                    legend=col == "latency_ms_p50", ax=ax)
        ax.set_ylabel(label)
        ax.set_title(label)
    fig.tight_layout()
    return fig


def plot_accuracy(df: pd.DataFrame, datasets: Sequence[str], variants: Sequence[str]):
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 4), squeeze=False)
    palette = dict(zip(variants, sns.color_palette(n_colors=len(variants))))
    for ax, d in zip(axes[0], datasets):
        sub = df[df["dataset"] == d].assign(acc_pct=lambda t: t["test_accuracy"] * 100)
        sns.stripplot(data=sub, x="variant", y="acc_pct", hue="variant", order=list(variants),
                      hue_order=list(variants), palette=palette, jitter=False, size=7, legend=False, ax=ax)
        for i, v in enumerate(variants):
            vals = sub.loc[sub["variant"] == v, "acc_pct"]
            if len(vals):
                ax.hlines(vals.mean(), i - 0.3, i + 0.3, colors=[palette[v]], linewidth=2.5)
        ax.set_title(f"{d}: test accuracy")
        ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    return fig


def make_figures(df: pd.DataFrame, histories: pd.DataFrame, predictions: dict[tuple[str, str], pd.DataFrame],
                 records: Sequence[dict[str, Any]], sel: Selection, figures: FigureSet) -> dict[str, bytes]:
    """Render every figure to PNG bytes, keyed by relative path."""
    datasets, variants = sorted(sel.datasets), sorted(sel.variants)
    out: dict[str, bytes] = {}
    with _style():
        for d in datasets:
            out[figures.learning[d]] = figure_png(plot_learning_curves(curves_for_dataset(histories, d), d, variants))
            names = class_order(records, d)
            for v in variants:
                cm = confusion_matrix(predictions[(d, v)], names)
                acc = df[(df["dataset"] == d) & (df["variant"] == v) & (df["seed"] == sel.seeds[0])]
                title = f"{d} / {v}, seed {sel.seeds[0]}"
                if len(acc):
                    title += f": {acc['test_accuracy'].iloc[0] * 100:.2f}% accuracy"
                out[figures.confusion[(d, v)]] = figure_png(plot_confusion(cm, title))
        out[figures.timing] = figure_png(plot_timing(df, datasets, variants))
        out[figures.accuracy] = figure_png(plot_accuracy(df, datasets, variants))
    return out


# --------------------------------------------------------------------------- writing


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def frame_rows(df: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    return [[_plain(v) for v in row] for row in df[list(columns)].itertuples(index=False, name=None)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attention_cnn.report.report", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-dir", default="reports/eval")
    ap.add_argument("--train-dir", default="reports/train")
    ap.add_argument("--raw-dir", default="data/raw", help="fetch outputs: {raw-dir}/{dataset}/source.json")
    ap.add_argument("--out-dir", default="reports")
    ap.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples for the paired CIs")
    ap.add_argument("--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="seed of the bootstrap draws")
    ap.add_argument("--alpha", type=float, default=stats.ALPHA, help="significance level of the verdicts")
    args = ap.parse_args(argv)
    if args.n_boot < 1:
        raise StageError(f"--n-boot must be >= 1, got {args.n_boot}")
    if not 0 < args.alpha < 1:
        raise StageError(f"--alpha must be in (0, 1), got {args.alpha}")

    sel = selection_from_params(load_params(args.params))
    # Read everything first: a missing input fails before anything is written.
    records = load_all_metrics(args.eval_dir, sel.datasets, sel.variants, sel.seeds)
    df = results_frame(records)
    per_class = per_class_frame(records)
    histories = load_histories(args.train_dir, sel.datasets, sel.variants, sel.seeds)
    predictions = {(d, v): load_predictions(args.eval_dir, d, v, sel.seeds[0])
                   for d, v, _ in _combos(sel.datasets, sel.variants, sel.seeds[:1])}
    inputs = load_input_info(args.raw_dir, sel.datasets)
    attention = load_attention(args.eval_dir, sel.datasets, sel.variants, sel.seeds[0])
    comparisons = compare_variants(args.eval_dir, sel, args.n_boot, args.bootstrap_seed,
                                   {(d, v, sel.seeds[0]): p for (d, v), p in predictions.items()})

    figs = figure_paths(sel)
    images = make_figures(df, histories, predictions, records, sel, figs)
    images.update(attention_images(attention))
    blocks = build_report(df, per_class, records, sel, figs, inputs, comparisons, args.alpha, args.n_boot,
                          attention)
    markdown = render_markdown(blocks)
    page = render_html(blocks, images)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "figures") as tmp:
        for rel, data in sorted(images.items()):
            atomic_write_bytes(tmp / Path(rel).name, data)
    with atomic_dir(out / "plots") as tmp:
        for d in sorted(sel.datasets):
            write_csv_rows(tmp / f"learning_curves_{d}.csv", CURVE_COLUMNS,
                           frame_rows(curves_for_dataset(histories, d), CURVE_COLUMNS))
        write_csv_rows(tmp / "timing.csv", TIMING_COLUMNS, frame_rows(timing_frame(df), TIMING_COLUMNS))
    write_csv_rows(out / "results.csv", RESULT_COLUMNS, frame_rows(df, RESULT_COLUMNS))
    write_csv_rows(out / "comparisons.csv", COMPARISON_COLUMNS, frame_rows(comparisons, COMPARISON_COLUMNS))
    atomic_write_json(out / "metrics.json", summary_metrics(df))
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", page)
    print(f"report: {len(df)} runs, {len(comparisons)} paired comparisons -> {out / 'report.html'}, "
          f"{out / 'report.md'}, {out / 'results.csv'}, {out / 'comparisons.csv'}")
    return 0
