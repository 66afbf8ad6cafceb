"""The report's tables and sentences: number formats, the per-data-set tables, the differences in words, the
verdict lines of the paired tests, and the original study's published numbers beside ours.

Each table is ``(header, rows)`` of strings; :mod:`attention_cnn.report.document` places them.
"""
from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Sequence

import pandas as pd

from attention_cnn.report import stats
from attention_cnn.report.compare import BASIS_SEED, comparison_pairs
from attention_cnn.report.load import class_order

TableSpec = tuple[list[str], list[list[str]]]

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

# --------------------------------------------------------------------------- formatting


def signed(x: float, decimals: int) -> str:
    """``+1.00``, ``−0.50`` (a minus sign, not a hyphen), ``0.00`` without a sign, ``n/a`` for NaN."""
    if math.isnan(x):
        return "n/a"
    s = f"{x:+.{decimals}f}"
    return s[1:] if float(s) == 0 else s.replace("-", "\u2212")


def points(fraction: float, decimals: int = 1) -> str:
    return signed(fraction * 100, decimals)


def fmt_p(p: float) -> str:
    """``p = 0.21``, ``p = 0.039``, ``p < 0.001``."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.1 else f"p = {p:.3f}"


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


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fmt_sources(values: Iterable[Any]) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def interval_kind(seeds: int) -> str:
    """What the accuracy figure's bars are, in words, for ``seeds`` seeds per variant."""
    if seeds >= stats.MIN_SEEDS:
        return f"95 % t-interval of the mean over {seeds} seeds"
    return "95 % Wilson interval on the pooled test examples"


# --------------------------------------------------------------------------- sentences


def difference_lines(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> list[str]:
    """Plain-words attention-vs-baseline lines for one data set (no significance claims; see verdict_lines).

    Each attention variant is set against its own baseline (:func:`attention_cnn.report.compare.baseline_of`),
    in ``variants`` order.
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
        line = f"`{v}` \u2212 `{base}`: {signed(mean_acc, 2)} points test accuracy {runs}"
        if n > 1:
            line += f" (per-seed differences {', '.join(signed(a, 2) for a in acc)})"
        line += f"; test loss {signed(statistics.fmean(loss), 4)}"
        bt, ot = b.loc[seeds, "train_time_s"].mean(), o.loc[seeds, "train_time_s"].mean()
        if bt > 0:
            line += f"; mean train time {ot / bt:.2f}\u00d7 the baseline's"
        line += ". This is a difference of means, not a significance test."
        lines.append(line)
    return lines


def seed_based(row: Any) -> bool:
    """Whether a comparisons row's verdict rests on the seed-level test (rows without ``verdict_basis``,
    written before it existed, rest on the pooled one)."""
    return getattr(row, "verdict_basis", None) == BASIS_SEED


def row_verdict(row: Any, alpha: float = stats.ALPHA) -> str:
    """The verdict of one comparisons row, from the test its ``verdict_basis`` names."""
    if seed_based(row):
        return stats.verdict(row.seed_delta_mean, row.seed_ci_low, row.seed_ci_high, row.seed_t_p, alpha,
                             test="paired t-test over seeds", interval="hierarchical bootstrap CI")
    return stats.verdict(row.delta_accuracy, row.ci_low, row.ci_high, row.mcnemar_p, alpha)


def basis_words(row: Any) -> str:
    """Which test the verdict used, in words."""
    n = int(getattr(row, "n_seeds", 0) or len(str(row.seeds).split()))
    if seed_based(row):
        return f"seed-level test, {n} seeds as the unit: paired t-test and hierarchical bootstrap CI"
    return (f"pooled test, McNemar over the (seed, example) pairs; the seed-level test needs at least "
            f"{stats.MIN_SEEDS} seeds, this comparison has {n}")


def pooled_text(row: Any) -> str:
    return (f"{points(row.delta_accuracy)} points (95% CI {points(row.ci_low)} to {points(row.ci_high)}), "
            f"McNemar {fmt_p(row.mcnemar_p)}")


def verdict_line(row: Any, alpha: float = stats.ALPHA) -> str:
    """One comparisons row in words: the verdict, the test it rests on, and the other test beside it, e.g.
    ``cnn_attention vs cnn on speech: +2.5 points (95% CI −1.0 to +6.0), McNemar p = 0.21: no significant
    difference at α = 0.05 (verdict from the pooled test ...)``."""
    head = f"{row.variant} vs {row.baseline} on {row.dataset}: "
    if not seed_based(row):
        return f"{head}{pooled_text(row)}: {row_verdict(row, alpha)} (verdict from the {basis_words(row)})"
    per_seed = ", ".join(points(float(x), 1) for x in str(row.seed_deltas).split())
    return (f"{head}{points(row.seed_delta_mean)} points mean over {row.n_seeds} seeds (per seed {per_seed}; "
            f"hierarchical bootstrap 95% CI {points(row.seed_ci_low)} to {points(row.seed_ci_high)}), paired "
            f"t-test over seeds {fmt_p(row.seed_t_p)}: {row_verdict(row, alpha)} (verdict from the "
            f"{basis_words(row)}); pooled over seeds for comparison: {pooled_text(row)}: "
            f"{stats.verdict(row.delta_accuracy, row.ci_low, row.ci_high, row.mcnemar_p, alpha)}")


def study_gap_text(row: Any) -> str:
    gap = STUDY_GAPS.get((str(row.dataset).lower(), row.variant, row.baseline))
    return "" if gap is None else f"{signed(gap, 1)} points"


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


# --------------------------------------------------------------------------- tables


def comparisons_table(comparisons: pd.DataFrame, alpha: float = stats.ALPHA) -> TableSpec:
    header = ["data set", "variant", "baseline", "seeds", "Δ accuracy (points)", "95% CI (points)",
              "McNemar p", "only baseline right", "only variant right", "seed-level Δ mean ± sd (points)",
              "seed-level 95% CI (points)", "t-test p (seeds)", "verdict", "verdict rests on",
              "study's Δ (1 run)"]
    rows = []
    for r in comparisons.itertuples(index=False):
        sd = "" if math.isnan(r.seed_delta_sd) else f" ± {r.seed_delta_sd * 100:.2f}"
        tested = not math.isnan(r.seed_t_p)
        rows.append([r.dataset, f"`{r.variant}`", f"`{r.baseline}`", str(r.seeds).replace(" ", ", "),
                     points(r.delta_accuracy, 2), f"{points(r.ci_low, 2)} to {points(r.ci_high, 2)}",
                     fmt_p(r.mcnemar_p).removeprefix("p = ").removeprefix("p "), str(r.baseline_only_correct),
                     str(r.variant_only_correct), points(r.seed_delta_mean, 2) + sd,
                     f"{points(r.seed_ci_low, 2)} to {points(r.seed_ci_high, 2)}" if tested
                     else f"needs ≥ {stats.MIN_SEEDS} seeds",
                     fmt_p(r.seed_t_p).removeprefix("p = ").removeprefix("p ") if tested else "—",
                     row_verdict(r, alpha),
                     "seed-level test" if seed_based(r) else "pooled test (McNemar)",
                     study_gap_text(r) or "—"])
    return header, rows


def ensembles_table(ensembles: pd.DataFrame) -> TableSpec:
    header = ["data set", "variant", "seeds averaged", "ensemble accuracy (%)", "mean single-model accuracy (%)",
              "gain (points)"]
    rows = [[r.dataset, f"`{r.variant}` ensemble", str(r.seeds).replace(" ", ", "), f"{r.accuracy * 100:.2f}",
             f"{r.seed_accuracy_mean * 100:.2f}", points(r.gain, 2)] for r in ensembles.itertuples(index=False)]
    return header, rows


def comparison_table(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> TableSpec:
    header = ["variant", "seeds", "test accuracy (%)", "test loss", "train time (s)", "test time (ms)",
              "p50 latency (ms)", "p50 file to label (ms)", "params", "epochs", "features", "source"]
    rows = []
    sub = df[df["dataset"] == dataset]
    for v in variants:
        r = sub[sub["variant"] == v]
        rows.append([
            f"`{v}`", str(len(r)), fmt_stat(r["test_accuracy"], 2, 100.0), fmt_stat(r["test_loss"], 4),
            fmt_stat(r["train_time_s"], 1), fmt_stat(r["test_time_ms"], 1), fmt_stat(r["latency_ms_p50"], 2),
            fmt_stat(r["e2e_latency_ms_p50"], 2),
            fmt_count(r["params"]), fmt_count(r["epochs_run"]), fmt_sources(r["features"]) or "-",
            fmt_sources(r["source"]),
        ])
    return header, rows


def study_table(df: pd.DataFrame, dataset: str, variants: Sequence[str]) -> TableSpec | None:
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
                    variants: Sequence[str]) -> TableSpec:
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


def runs_table(df: pd.DataFrame) -> TableSpec:
    header = ["dataset", "variant", "seed", "source", "test accuracy (%)", "test loss", "epochs", "train time (s)"]
    rows = [[r.dataset, f"`{r.variant}`", str(r.seed), r.source, f"{r.test_accuracy * 100:.2f}",
             f"{r.test_loss:.4f}", str(r.epochs_run), f"{r.train_time_s:.1f}"]
            for r in df.itertuples(index=False)]
    return header, rows
