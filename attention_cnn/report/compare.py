"""The report's numbers: each attention variant against its baseline (paired tests), means over seeds, confusion
matrices and the plot tables. The tests themselves are in :mod:`attention_cnn.report.stats`."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from attention_cnn import runs
from attention_cnn.common import StageError
from attention_cnn.models import available, variant_info
from attention_cnn.report import stats
from attention_cnn.report.load import Selection, load_predictions, predictions_path

COMPARISON_COLUMNS = [
    "dataset", "variant", "baseline", "delta_accuracy", "ci_low", "ci_high", "mcnemar_p",
    "seeds", "n_pairs", "baseline_only_correct", "variant_only_correct",
    # the seed as the unit (stats.seed_level_test); accuracy differences are fractions like delta_accuracy
    "n_seeds", "seed_deltas", "seed_delta_mean", "seed_delta_sd", "seed_t_p", "seed_ci_low", "seed_ci_high",
    "verdict_basis",
]
# verdict_basis: which test a comparison's verdict rests on (stats.MIN_SEEDS seeds or more: the seed-level one)
BASIS_SEED, BASIS_POOLED = "seed-level", "pooled"
# ensembles(): accuracies are fractions; gain = accuracy - seed_accuracy_mean
ENSEMBLE_COLUMNS = ["dataset", "variant", "n_seeds", "seeds", "num_test", "accuracy", "seed_accuracy_mean", "gain"]
CURVE_COLUMNS = ["epoch", "variant", "seed", "split", "accuracy", "loss"]
TIMING_COLUMNS = ["dataset", "variant", "train_time_s", "latency_ms_p50"]
# Means written to metrics.json and how many decimals each keeps.
SUMMARY_ROUNDING = {
    "test_accuracy": 4,
    "test_loss": 4,
    "train_time_s": 3,
    "latency_ms_p50": 3,
}
N_BOOT = 10000
BOOTSTRAP_SEED = 0

# --------------------------------------------------------------------------- paired comparisons


def baseline_of(variant: str) -> str | None:
    """The no-attention variant ``variant`` is tested against: the one its module declares
    (:func:`attention_cnn.models.variant_info`), else, for a name not registered, the naming rule
    ``<backbone>_<block>`` -> ``<backbone>``; None for a baseline itself (``cnn``, ``resnet``)."""
    if variant in available():
        return variant_info(variant).baseline
    backbone, sep, _ = variant.partition("_")
    return backbone if sep and backbone else None


def comparison_pairs(variants: Iterable[str]) -> list[tuple[str, str]]:
    """``(variant, baseline)`` for every selected variant whose baseline is selected too, sorted."""
    chosen = set(variants)
    return sorted((v, b) for v in chosen if (b := baseline_of(v)) is not None and b in chosen and b != v)


def paired_correctness(pred_a: pd.DataFrame, pred_b: pd.DataFrame, path_a: Path, path_b: Path):
    """Two boolean vectors (A right?, B right?) over the same test examples, joined on ``index``."""
    a, b = aligned_pair(pred_a, pred_b, path_a, path_b)
    return (a["actual"] == a["predicted"]).to_numpy(), (b["actual"] == b["predicted"]).to_numpy()


def aligned_pair(pred_a: pd.DataFrame, pred_b: pd.DataFrame, path_a: Path, path_b: Path):
    """Two predictions files indexed by ``index``, B in A's row order; one-line errors unless both hold the same
    test examples with the same true labels."""
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
    return a, b


def _fraction(x: float) -> float:
    """Rounded to 6 decimals like the pooled columns; NaN stays NaN (an empty cell in the CSV)."""
    return x if math.isnan(x) else round(x, 6) + 0.0  # + 0.0: no "-0.0"


def compare_variants(eval_dir, sel: Selection, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED,
                     predictions: dict[tuple[str, str, int], pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per data set x (attention variant, baseline): COMPARISON_COLUMNS.

    For each seed, the variant's and the baseline's predictions of that seed are joined on ``index``; the
    per-seed paired correctness vectors are concatenated (pooled over seeds, see :mod:`attention_cnn.report.stats`)
    and give the accuracy difference (variant - baseline, a fraction), its paired bootstrap CI and the exact
    McNemar p-value. The same per-seed vectors, kept apart, give the seed-level test (per-seed differences,
    paired t-test, hierarchical bootstrap CI); ``verdict_basis`` says which of the two the verdict rests on.
    ``predictions``: already loaded files by (dataset, variant, seed), read otherwise (and added to it).
    """
    get = _loader(eval_dir, predictions)
    rows = []
    seeds = sorted(sel.seeds)
    for d in sorted(sel.datasets):
        for v, base in comparison_pairs(sel.variants):
            parts_a, parts_b = [], []
            for s in seeds:
                a, b = paired_correctness(get(d, base, s), get(d, v, s),
                                          predictions_path(eval_dir, d, base, s), predictions_path(eval_dir, d, v, s))
                parts_a.append(a)
                parts_b.append(b)
            correct_a, correct_b = np.concatenate(parts_a), np.concatenate(parts_b)
            delta, low, high = stats.paired_bootstrap_delta(correct_a, correct_b, n_boot=n_boot, seed=seed)
            only_base, only_variant = stats.discordant_counts(correct_a, correct_b)
            by_seed = stats.seed_level_test(list(zip(parts_a, parts_b)), n_boot=n_boot, seed=seed)
            rows.append({
                "dataset": d, "variant": v, "baseline": base,
                "delta_accuracy": round(delta, 6), "ci_low": round(low, 6), "ci_high": round(high, 6),
                "mcnemar_p": float(f"{stats.mcnemar_exact_counts(only_base, only_variant):.6g}"),
                "seeds": " ".join(str(s) for s in seeds), "n_pairs": len(correct_a),
                "baseline_only_correct": only_base, "variant_only_correct": only_variant,
                "n_seeds": by_seed.seeds, "seed_deltas": " ".join(f"{_fraction(x):g}" for x in by_seed.deltas),
                "seed_delta_mean": _fraction(by_seed.mean), "seed_delta_sd": _fraction(by_seed.sd),
                "seed_t_p": by_seed.t_p if math.isnan(by_seed.t_p) else float(f"{by_seed.t_p:.6g}"),
                "seed_ci_low": _fraction(by_seed.ci_low), "seed_ci_high": _fraction(by_seed.ci_high),
                "verdict_basis": BASIS_SEED if by_seed.tested else BASIS_POOLED,
            })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _loader(eval_dir, predictions: dict[tuple[str, str, int], pd.DataFrame] | None):
    """``get(dataset, variant, seed)``: that run's predictions, read once (into ``predictions`` when given)."""
    cache = predictions if predictions is not None else {}

    def get(d: str, v: str, s: int) -> pd.DataFrame:
        if (d, v, s) not in cache:
            cache[(d, v, s)] = load_predictions(eval_dir, d, v, s)
        return cache[(d, v, s)]

    return get


# --------------------------------------------------------------------------- ensembles of the seeds

def ensembles(eval_dir, sel: Selection,
              predictions: dict[tuple[str, str, int], pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per data set x variant with two seeds or more: ENSEMBLE_COLUMNS.

    The ensemble averages the class probabilities of the seeds' models (predictions.csv's ``p_<class>`` columns,
    joined on the test example's index) and predicts the most probable class (the first on a tie). It is a model
    of its own, with the seeds' combined cost at prediction, not a mean over seeds; ``gain`` is its accuracy
    minus the mean of the seeds' own. Runs whose files lack the probability columns (written before they
    existed) get no row.
    """
    seeds = sorted(sel.seeds)
    rows = []
    get = _loader(eval_dir, predictions)
    for d in sorted(sel.datasets) if len(seeds) >= 2 else []:
        for v in sorted(sel.variants):
            frames = [get(d, v, s) for s in seeds]
            columns = runs.probability_columns(frames[0])
            if not columns or any(runs.probability_columns(f) != columns for f in frames):
                continue
            first = predictions_path(eval_dir, d, v, seeds[0])   # every seed in the first seed's row order
            aligned = [aligned_pair(frames[0], f, first, predictions_path(eval_dir, d, v, s))[1]
                       for s, f in zip(seeds, frames)]
            mean_probs = np.mean([a[columns].to_numpy(np.float64) for a in aligned], axis=0)
            names = np.array([c[len(runs.PROBABILITY_PREFIX):] for c in columns], dtype=object)
            actual = aligned[0]["actual"].to_numpy(dtype=object)
            accuracy = float(np.mean(names[mean_probs.argmax(axis=1)] == actual))
            seed_mean = float(np.mean([np.mean(a["predicted"].to_numpy(dtype=object) == actual) for a in aligned]))
            rows.append({"dataset": d, "variant": v, "n_seeds": len(seeds), "seeds": " ".join(map(str, seeds)),
                         "num_test": len(actual), "accuracy": _fraction(accuracy),
                         "seed_accuracy_mean": _fraction(seed_mean), "gain": _fraction(accuracy - seed_mean)})
    return pd.DataFrame(rows, columns=ENSEMBLE_COLUMNS)


# --------------------------------------------------------------------------- per-run tables


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
    return pd.DataFrame(counts, index=pd.Index(labels, name="actual"), columns=pd.Index(labels, name="predicted"))


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
