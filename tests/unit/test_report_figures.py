"""The report's accuracy figure keeps differences in proportion: intervals, a wide fixed span, the study's marks."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.collections import PathCollection
import pandas as pd
import pytest

from attention_cnn.report import figures, stats


def frame(accs: dict[tuple[str, str], list[float]], num_test: int = 10000) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": d, "variant": v, "seed": s, "test_accuracy": a, "num_test": num_test}
                         for (d, v), values in accs.items() for s, a in enumerate(values)])


def drawn(ax):
    """(y of the mean marks, their error bar (low, high) pairs, the hollow study marks' y) of one panel."""
    means, bars, study = [], [], []
    for container in ax.containers:  # errorbar containers: (marker line, caps, bar segments)
        line, _, (segments,) = container.lines
        means += list(line.get_ydata())
        bars += [tuple(seg[:, 1]) for seg in segments.get_segments()]
    for coll in ax.collections:  # scatter marks; the study's are the hollow ones
        if isinstance(coll, PathCollection) and len(coll.get_facecolors()) == 0:
            study += [float(y) for _, y in coll.get_offsets()]
    return means, bars, study


def test_a_tenth_of_a_point_on_an_axis_of_at_least_ten():
    """95.60 vs 95.70 %: the axis spans at least 10 points, holds the study's 98.6 / 98.5 %, and the bars are
    the Wilson intervals on the pooled test examples (2 seeds x 10,000)."""
    df = frame({("mnist", "cnn"): [0.9560, 0.9560], ("mnist", "cnn_attention"): [0.9570, 0.9570]})
    fig = figures.plot_accuracy(df, ["mnist"], ["cnn", "cnn_attention"])
    try:
        ax = fig.axes[0]
        low, high = ax.get_ylim()
        assert high - low >= 10 and low <= 95.0 and high >= 98.6
        means, bars, study = drawn(ax)
        assert means == pytest.approx([95.60, 95.70])
        want = [tuple(100 * x for x in stats.wilson_interval(c, 20000)) for c in (19120, 19140)]
        assert [x for bar in bars for x in bar] == pytest.approx([x for bar in want for x in bar], abs=1e-9)
        assert sorted(study) == pytest.approx([98.5, 98.6])
        assert "Wilson interval on the pooled test examples" in ax.get_title()
    finally:
        plt.close(fig)


def test_three_seeds_show_the_seed_spread_and_panels_share_one_span():
    df = frame({("mnist", "cnn"): [0.95, 0.96, 0.97], ("mnist", "cnn_attention"): [0.96, 0.96, 0.97],
                ("speech", "cnn"): [0.99, 0.995, 1.0], ("speech", "cnn_attention"): [0.99, 0.99, 0.995]}, 300)
    fig = figures.plot_accuracy(df, ["mnist", "speech"], ["cnn", "cnn_attention"])
    try:
        spans = [ax.get_ylim()[1] - ax.get_ylim()[0] for ax in fig.axes]
        assert spans[0] == pytest.approx(spans[1])
        # speech: the study's 81.0 % is on the axis with the 99 % runs (about 20 points), and so is mnist's
        assert fig.axes[1].get_ylim()[0] <= 81.0 and spans[0] >= 19
        assert fig.axes[1].get_ylim()[1] < 101  # 100 % at the top, not a window centred past it
        _, bars, _ = drawn(fig.axes[0])
        assert bars[0] == pytest.approx(tuple(100 * x for x in stats.mean_t_interval([0.95, 0.96, 0.97])))
        # speech cnn: the t-interval passes 100 %, drawn clipped at 100
        assert drawn(fig.axes[1])[1][0][1] == pytest.approx(100.0)
        assert all("t-interval of the mean over 3 seeds" in ax.get_title() for ax in fig.axes)
    finally:
        plt.close(fig)


def test_accuracy_axis_window():
    assert figures.accuracy_axis([50.0, 52.0], 10) == (46.0, 56.0)  # centred on what is drawn
    assert figures.accuracy_axis([99.0, 99.9], 10) == (90.0, 100.0)  # stops at 100
    assert figures.accuracy_axis([1.0, 2.0], 10) == (0.0, 10.0)      # and at 0
