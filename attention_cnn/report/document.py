"""The report as a document: a list of blocks (headings, paragraphs, bullets, tables, figures) in reading order.

:func:`build_report` decides what the report says and in which order, from the loaded runs and the
comparisons; :mod:`attention_cnn.report.render` turns the same blocks into Markdown and HTML, so the two
cannot say different things. The verdicts are :func:`attention_cnn.report.tables.verdict_lines`'s (from the
paired tests of :mod:`attention_cnn.report.compare`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import pandas as pd

from attention_cnn.evaluation import attention_maps
from attention_cnn.models import available, variant_info
from attention_cnn.report import stats
from attention_cnn.report.compare import COMPARISON_COLUMNS, N_BOOT, baseline_of, comparison_pairs
from attention_cnn.report.load import AttentionRun, InputInfo, Selection
from attention_cnn.report.tables import (STUDY_NOTE, and_list, comparison_table, comparisons_table, difference_lines,
                                         ensembles_table, fmt_sources, interval_kind, per_class_table, runs_table,
                                         study_table, verdict_lines)

TITLE = "Does attention help a small CNN?"
SD_BAND = ", band = \u00b1 1 sd"
# The accuracy figure's axis spans at least this many points (figures.plot_accuracy), so gaps keep their size.
MIN_ACCURACY_SPAN_PCT = 10.0
BASELINE_VARIANT = "cnn"

# --------------------------------------------------------------------------- blocks


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


def attention_figure_path(dataset: str, variant: str, set_name: str) -> str:
    return f"figures/attention_{dataset}_{variant}_{set_name}.png"


# --------------------------------------------------------------------------- sections


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


def variant_notes(variants: Sequence[str]) -> list[str]:
    """``"`v` adds <its note>"`` for each registered variant that declares what it adds."""
    return [f"`{v}` adds {variant_info(v).note}" for v in variants if v in available() and variant_info(v).note]


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
        "every variant) and for the first test examples the model got wrong, as a grid: each example "
        "(labelled true class, or true \u2192 predicted class and confidence) its grayscale input, then one "
        "overlay per attention block (colour map turbo on a fixed 0..1 scale, blue low, red high, with a colour "
        "bar per kind of block; no colour where the map does not reach). "
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
        blocks.append(Para("Warning: no attention block was found in the model of " + and_list(missing)
                           + ", so no map is shown for it (attention_cnn/evaluation/attention_maps.py recognises "
                           "the blocks of attention_cnn/models/blocks.py)."))
    if len(blocks) == 2 and not missing:
        return []  # only variants without attention
    return blocks


def baseline_for(variants: Sequence[str]) -> str:
    return BASELINE_VARIANT if BASELINE_VARIANT in variants else variants[0]


def build_report(df: pd.DataFrame, per_class: pd.DataFrame, records: Sequence[dict[str, Any]],
                 sel: Selection, figures: FigureSet, inputs: dict[str, InputInfo] | None = None,
                 comparisons: pd.DataFrame | None = None, alpha: float = stats.ALPHA,
                 n_boot: int = N_BOOT, attention: dict[tuple[str, str], AttentionRun] | None = None,
                 ensembles: pd.DataFrame | None = None) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and HTML alike.

    ``comparisons``: :func:`attention_cnn.report.compare.compare_variants`'s table; without it the report has no
    paired tests. ``attention``: :func:`attention_cnn.report.load.load_attention`'s runs; without it no maps.
    ``ensembles``: :func:`attention_cnn.report.compare.ensembles`' table; without rows no ensemble section.
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
            f"{and_list([f'`{v}`' for v in variants])} on {and_list(datasets)}, "
            f"each trained with {n} seed{'s' if n != 1 else ''} ({', '.join(str(s) for s in seeds)}), "
            "and sets the results beside the numbers the original 2023 course study published."
        ),
    ]
    notes = variant_notes(variants)
    if notes:
        blocks.append(Para("Beyond the study: " + "; ".join(notes) + ". Each attention variant is tested against "
                           "the variant without attention on the same backbone: "
                           + ", ".join(f"`{v}` vs `{b}`" for v, b in comparison_pairs(variants)) + "."))
    blocks += [
        Para(
            "How to read the tables: values are the mean over seeds, followed by \u00b1 the sample standard "
            "deviation when there is more than one seed. Test time is the wall time to evaluate the whole "
            "test set; p50 latency is the median time to predict a single example (the model alone, on "
            "stored features); p50 file to label is the median time one test file takes through the exported "
            "model, as the predict command runs it (read, decode, resample, featurize, classify; docs/predict.md). "
            "Times depend on the "
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
            "observation, so they count the sampling of the test examples but not the training's own "
            "randomness (a new seed can move a model's accuracy by more than a test set's sampling does). "
            "The seed-level test takes the seed as the unit: the per-seed differences (same seed, same test "
            "examples), a paired t-test over them (exact two-sided p, seeds − 1 degrees of freedom) and "
            f"a 95% interval from a hierarchical bootstrap ({n_boot:,} resamples: seeds with replacement, "
            "then the example pairs within each drawn seed; fixed seed). "
            f"With at least {stats.MIN_SEEDS} seeds the verdict rests on the seed-level test and the pooled "
            f"test stands beside it; with fewer it rests on the pooled test, since the seed-level test needs "
            f"at least {stats.MIN_SEEDS} seeds. The column ‘verdict rests on’ says which test each "
            "verdict used. The study's published differences come from one run per model and had no test."
        ))
        blocks.append(_table(comparisons_table(comparisons, alpha),
                             "Each attention variant against its baseline without attention (reports/comparisons.csv)"))

    if ensembles is not None and len(ensembles):
        blocks.append(Heading(2, "Ensembles of the seeds"))
        blocks.append(Para(
            "Each variant's seed models as one model: the ensemble averages their class probabilities for each test "
            "example and predicts the most probable class. It is a variant of its own, with all the seeds' cost at "
            "prediction time, not a mean over seeds; the gain is its accuracy minus the mean of the single models'."))
        blocks.append(_table(ensembles_table(ensembles), "Ensembles of the seeds' models (reports/ensembles.csv)"))

    for d in datasets:
        blocks += _dataset_section(df, per_class, records, sel, figures, inputs, comparisons, alpha, d, variants, n)

    blocks += attention_section(attention or {}, sel)

    blocks.append(Heading(2, "Across data sets"))
    blocks.append(Figure(figures.accuracy, (
        f"Test accuracy per variant: the mean with its {interval_kind(n)} (bars), each seed as a small dot and "
        "the study's published accuracy (one run) as a hollow diamond. Every panel's axis spans the same number "
        f"of points, at least {MIN_ACCURACY_SPAN_PCT:g}, so a gap of a tenth of a point looks like one")))
    blocks.append(Figure(figures.timing, "Mean training time and single-example p50 latency per data set and variant"))
    blocks.append(Heading(2, "All runs"))
    blocks.append(_table(runs_table(df), "Every run in this report and the data source it used"))
    return blocks


def _dataset_section(df: pd.DataFrame, per_class: pd.DataFrame, records: Sequence[dict[str, Any]], sel: Selection,
                     figures: FigureSet, inputs: dict[str, InputInfo], comparisons: pd.DataFrame, alpha: float,
                     d: str, variants: Sequence[str], n: int) -> list[Block]:
    """"Data set: d": its table, data sources, input notes, differences and verdicts, the study's numbers,
    figures and per-class scores."""
    sub = df[df["dataset"] == d]
    blocks: list[Block] = [Heading(2, f"Data set: {d}"),
                           _table(comparison_table(df, d, variants), f"{d}: this pipeline, per variant")]
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
    return blocks
