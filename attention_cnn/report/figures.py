"""The report's figures (matplotlib + seaborn), rendered to PNG bytes: learning curves, confusion matrices,
timing and accuracy per variant; the attention maps are copied as evaluate drew them.

Deterministic: fixed style and sizes, and the PNGs carry no timestamp or software tag.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from attention_cnn.report.compare import confusion_matrix, curves_for_dataset  # noqa: E402
from attention_cnn.report.document import FigureSet, attention_figure_path  # noqa: E402
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


def attention_images(attention: dict[tuple[str, str], AttentionRun]) -> dict[str, bytes]:
    """The attention PNGs by their path in the report (copied into figures/)."""
    return {attention_figure_path(d, v, name): data
            for (d, v), run in sorted(attention.items()) for name, data in run.images.items()}
