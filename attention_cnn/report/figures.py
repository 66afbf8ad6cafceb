"""The report's figures (matplotlib + seaborn), rendered to PNG bytes: learning curves, confusion matrices,
timing and accuracy per variant; the attention maps are copied as evaluate drew them.

Deterministic: fixed style and sizes, and the PNGs carry no timestamp or software tag.
"""
from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from attention_cnn.report import stats, tables  # noqa: E402
from attention_cnn.report.compare import confusion_matrix, curves_for_dataset  # noqa: E402
from attention_cnn.report.document import MIN_ACCURACY_SPAN_PCT, FigureSet, attention_figure_path  # noqa: E402
from attention_cnn.report.load import AttentionRun, Selection, class_order  # noqa: E402

FIG_DPI = 100
PNG_METADATA = {"Software": None}
RC = {
    "figure.dpi": FIG_DPI,
    "savefig.dpi": FIG_DPI,
    "font.family": "DejaVu Sans",
    "axes.titlesize": 11,
}


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


STUDY_MARKER = {"marker": "D", "s": 60, "facecolors": "none", "edgecolors": "black", "linewidths": 1.5, "zorder": 4}


def accuracy_interval(runs: pd.DataFrame, seeds: int) -> tuple[float, float, float]:
    """``(mean, low, high)`` test accuracy in %, of one variant's runs (columns test_accuracy, num_test): in a
    panel of ``seeds`` seeds per variant, stats.MIN_SEEDS or more give the t-interval over seeds (the training's
    randomness), fewer the Wilson interval on the pooled test examples (the test set's sampling only)."""
    acc = runs["test_accuracy"].to_numpy(dtype=float)
    if seeds >= stats.MIN_SEEDS:
        low, high = stats.mean_t_interval(acc)
    else:
        n = runs["num_test"].to_numpy(dtype=int)
        low, high = stats.wilson_interval(int(round(float((acc * n).sum()))), int(n.sum()))
    return 100 * float(acc.mean()), 100 * max(0.0, low), 100 * min(1.0, high)  # a t-interval can pass 100 %


def accuracy_axis(values: Sequence[float], span: float) -> tuple[float, float]:
    """A ``span``-point window inside 0..100 centred on everything drawn (``values``, in %)."""
    mid = (min(values) + max(values)) / 2
    top = min(100.0, mid + span / 2)
    bottom = max(0.0, top - span)
    return bottom, bottom + span


def _once(ax, label: str) -> str | None:
    """``label`` the first time it is used on ``ax`` (one legend entry per kind of mark)."""
    return None if label in ax.get_legend_handles_labels()[1] else label


def plot_accuracy(df: pd.DataFrame, datasets: Sequence[str], variants: Sequence[str]):
    """Per data set: each variant's mean test accuracy with its 95 % interval (:func:`accuracy_interval`), its
    seeds as small dots and the study's published accuracy as a hollow diamond. Every panel spans the same
    number of points (at least MIN_ACCURACY_SPAN_PCT), so equal gaps look equal across panels."""
    palette = dict(zip(variants, sns.color_palette(n_colors=len(variants))))
    panels = []
    for d in datasets:
        sub = df[df["dataset"] == d]
        study = tables.STUDY_RESULTS.get(d.lower(), {})
        seeds = int(sub.groupby("variant").size().min()) if len(sub) else 0
        drawn = []
        for i, v in enumerate(variants):
            runs = sub[sub["variant"] == v]
            pub = study.get(v, {}).get("test_accuracy_pct")
            if len(runs):
                drawn.append((i, v, runs, *accuracy_interval(runs, seeds), pub))
            elif pub is not None:
                drawn.append((i, v, runs, float("nan"), pub, pub, pub))
        panels.append((d, drawn, seeds))
    extent = {}  # data set -> every value drawn in its panel (%), so the axis holds them all
    for d, drawn, _ in panels:
        extent[d] = [x for _, _, runs, _, low, high, pub in drawn
                     for x in (low, high, pub, *(100 * runs["test_accuracy"])) if x is not None and not math.isnan(x)]
    need = max((max(e) - min(e) for e in extent.values() if e), default=0.0)
    span = min(100.0, max(MIN_ACCURACY_SPAN_PCT, float(math.ceil(need * 1.1))))

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 4.4), squeeze=False)
    for ax, (d, drawn, seeds) in zip(axes[0], panels):
        for i, v, runs, mean, low, high, pub in drawn:
            if len(runs):
                ax.scatter([i + 0.12] * len(runs), 100 * runs["test_accuracy"], s=14, color=palette[v], alpha=0.6,
                           zorder=2, label=_once(ax, "one seed"))
                ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="o", color=palette[v], capsize=5,
                            markersize=7, linewidth=2, zorder=3, label=_once(ax, "mean, 95 % interval"))
            if pub is not None:
                ax.scatter([i - 0.12], [pub], label=_once(ax, "study (1 run)"), **STUDY_MARKER)
        ax.set_xticks(range(len(variants)), list(variants), rotation=20 if len(variants) > 3 else 0)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        if drawn:
            bottom, top = accuracy_axis(extent[d], span)
            pad = 0.02 * span  # room for a mark at 100 % (the ticks stop at 100)
            ax.set_ylim(bottom - pad, top + pad)
            ax.legend(loc="best", fontsize=8, frameon=True)
        ax.set_title(f"{d}: test accuracy\nbars: {tables.interval_kind(seeds)}", fontsize=10)
        ax.set_ylabel(f"test accuracy (%), axis spans {span:g} points")
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


def attention_images(attention: dict[tuple[str, str], AttentionRun]) -> dict[str, bytes]:
    """The attention PNGs by their path in the report (copied into figures/)."""
    return {attention_figure_path(d, v, name): data
            for (d, v), run in sorted(attention.items()) for name, data in run.images.items()}
