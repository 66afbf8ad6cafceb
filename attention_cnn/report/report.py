"""Report stage: gather per-run metrics and histories into tables, plots and a report.

Reads, for every (dataset, variant, seed) named in ``params.yaml``::

    {eval_dir}/{d}/{v}/seed{s}/metrics.json
    {eval_dir}/{d}/{v}/seed{s}/predictions.csv   (confusion matrices: first seed; paired tests: every seed)
    {train_dir}/{d}/{v}/seed{s}/history.csv
    {raw_dir}/{d}/source.json                    (skipped input files, train/test split; absent: 0)
    {eval_dir}/{d}/{v}/seed{s}/attention/        index.json + PNGs of the attention maps (first seed)

and writes into ``out_dir``::

    results.csv                      one row per dataset x variant x seed (+ test accuracy mean and sd over seeds)
    comparisons.csv                  each attention variant vs its no-attention baseline: pooled over seeds (paired
                                     bootstrap CI, exact McNemar p) and with the seed as the unit (paired t-test,
                                     hierarchical bootstrap CI), and which one the verdict rests on (stats.py)
    ensembles.csv                    per dataset x variant with 2+ seeds: the seeds' models averaged (compare.py)
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

    python -m stages.report --params params.yaml --eval-dir reports/eval \
        --train-dir reports/train --raw-dir data/raw --out-dir reports \
        [--n-boot 10000] [--bootstrap-seed 0] [--alpha 0.05]

Where each part lives: :mod:`attention_cnn.report.load` (reading), :mod:`~attention_cnn.report.compare`
(paired tests, means), :mod:`~attention_cnn.report.tables` (tables and sentences),
:mod:`~attention_cnn.report.document` (what the report says, in order), :mod:`~attention_cnn.report.render`
(Markdown and HTML), :mod:`~attention_cnn.report.figures` (PNGs); this module reads, computes, then writes.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence, Union

import pandas as pd

from attention_cnn.common import (StageError, atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                  write_csv_rows)
from attention_cnn.report import stats
from attention_cnn.report.compare import (BOOTSTRAP_SEED, COMPARISON_COLUMNS, CURVE_COLUMNS, ENSEMBLE_COLUMNS, N_BOOT,
                                          TIMING_COLUMNS, compare_variants, curves_for_dataset, ensembles,
                                          summary_metrics, timing_frame)
from attention_cnn.report.document import build_report, figure_paths
from attention_cnn.report.figures import attention_images, make_figures
from attention_cnn.report.load import (RESULT_COLUMNS, Selection, combos, load_all_metrics, load_attention,
                                       load_histories, load_input_info, load_predictions, per_class_frame,
                                       results_frame)
from attention_cnn.report.render import render_html, render_markdown


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def frame_rows(df: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    return [[_plain(v) for v in row] for row in df[list(columns)].itertuples(index=False, name=None)]


def write_report(sel: Selection, eval_dir: Union[str, Path], train_dir: Union[str, Path], raw_dir: Union[str, Path],
                 out_dir: Union[str, Path], n_boot: int = N_BOOT, bootstrap_seed: int = BOOTSTRAP_SEED,
                 alpha: float = stats.ALPHA) -> tuple[int, int]:
    """Read the runs of ``sel``, write every report output under ``out_dir``; return (runs, paired comparisons)."""
    if n_boot < 1:
        raise StageError(f"--n-boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise StageError(f"--alpha must be in (0, 1), got {alpha}")
    # Read everything first: a missing input fails before anything is written.
    records = load_all_metrics(eval_dir, sel.datasets, sel.variants, sel.seeds)
    df = results_frame(records)
    per_class = per_class_frame(records)
    histories = load_histories(train_dir, sel.datasets, sel.variants, sel.seeds)
    predictions = {(d, v): load_predictions(eval_dir, d, v, sel.seeds[0])
                   for d, v, _ in combos(sel.datasets, sel.variants, sel.seeds[:1])}
    inputs = load_input_info(raw_dir, sel.datasets)
    attention = load_attention(eval_dir, sel.datasets, sel.variants, sel.seeds[0])
    loaded = {(d, v, sel.seeds[0]): p for (d, v), p in predictions.items()}
    comparisons = compare_variants(eval_dir, sel, n_boot, bootstrap_seed, loaded)
    ensemble = ensembles(eval_dir, sel, loaded)

    figs = figure_paths(sel)
    images = make_figures(df, histories, predictions, records, sel, figs)
    images.update(attention_images(attention))
    blocks = build_report(df, per_class, records, sel, figs, inputs, comparisons, alpha, n_boot,
                          attention, ensemble)
    markdown = render_markdown(blocks)
    page = render_html(blocks, images)

    out = Path(out_dir)
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
    write_csv_rows(out / "ensembles.csv", ENSEMBLE_COLUMNS, frame_rows(ensemble, ENSEMBLE_COLUMNS))
    atomic_write_json(out / "metrics.json", summary_metrics(df))
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", page)
    return len(df), len(comparisons)
