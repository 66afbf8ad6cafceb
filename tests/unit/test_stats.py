"""attention_cnn/report/stats.py: the paired bootstrap and the exact McNemar test can say "no" as well as "yes"."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from attention_cnn.report import stats
from attention_cnn.report.stats import discordant_counts, mcnemar_exact, mcnemar_exact_counts, paired_bootstrap_delta


def correlated_pair(n: int, acc_a: float, acc_b: float, seed: int):
    """Two correctness vectors on the same n examples with shared difficulty (as real models have)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    return difficulty < acc_a, difficulty + rng.normal(0, 0.05, n) < acc_b


def test_only_numpy_and_scipy_are_imported():
    import ast
    from pathlib import Path

    imported = set()
    for node in ast.walk(ast.parse(Path(stats.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "typing", "numpy", "scipy"}, imported


def test_bootstrap_ci_contains_the_true_delta_on_synthetic_data():
    """Many synthetic test sets drawn around a known true gap: the 95% CI covers it about 95% of the time."""
    true_a, true_b, n, trials = 0.80, 0.85, 400, 200
    covered = 0
    for t in range(trials):
        a, b = correlated_pair(n, true_a, true_b, seed=t)
        delta, low, high = paired_bootstrap_delta(a, b, n_boot=2000, seed=t)
        assert low <= delta <= high
        covered += low <= true_b - true_a <= high
    assert 0.88 <= covered / trials <= 0.99, covered / trials


def test_bootstrap_matches_resampling_example_indices():
    """The multinomial shortcut has the same distribution as drawing example indices with replacement."""
    a, b = correlated_pair(300, 0.7, 0.75, seed=3)
    _, low, high = paired_bootstrap_delta(a, b, n_boot=20000, seed=1)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, len(a), size=(20000, len(a)))
    naive = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    naive_low, naive_high = np.quantile(naive, [0.025, 0.975])
    assert low == pytest.approx(naive_low, abs=0.006) and high == pytest.approx(naive_high, abs=0.006)


def test_bootstrap_is_deterministic_with_the_seed():
    a, b = correlated_pair(500, 0.9, 0.92, seed=0)
    assert paired_bootstrap_delta(a, b, seed=7) == paired_bootstrap_delta(a, b, seed=7)
    # other seeds draw other resamples (visible with few of them; with 10,000 the quantiles barely move)
    assert len({paired_bootstrap_delta(a, b, n_boot=25, seed=s)[1:] for s in range(5)}) > 1
    assert paired_bootstrap_delta(a, b, seed=7)[0] == paired_bootstrap_delta(a, b, seed=8)[0]  # the point estimate


def test_identical_predictions_give_delta_zero_and_p_one():
    a = np.array([True, False, True, True, False] * 20)
    assert paired_bootstrap_delta(a, a.copy()) == (0.0, 0.0, 0.0)
    assert mcnemar_exact(a, a.copy()) == 1.0
    # different examples wrong but no discordant pair at all: also p = 1
    assert mcnemar_exact([1, 1, 0], [1, 1, 0]) == 1.0


def test_a_clearly_better_model_is_significant():
    a, b = correlated_pair(1000, 0.80, 0.90, seed=5)
    delta, low, high = paired_bootstrap_delta(a, b)
    assert delta > 0.05 and low > 0 and high > low
    assert mcnemar_exact(a, b) < 0.05
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)  # two-sided
    delta_rev, low_rev, high_rev = paired_bootstrap_delta(b, a)
    assert delta_rev == pytest.approx(-delta) and high_rev < 0


def test_a_small_difference_on_few_examples_is_not_significant():
    """The study's speech gap (+3.7 points) on its 300 test clips, with a realistic number of flips."""
    a = np.array([True] * 243 + [False] * 57)       # 81.0 %
    b = a.copy()
    b[243:269] = True                               # 26 examples only B gets right
    b[:15] = False                                  # 15 examples only A gets right: B = 84.7 %
    delta, low, high = paired_bootstrap_delta(a, b)
    assert delta == pytest.approx(11 / 300)
    assert low < 0 < high
    assert mcnemar_exact(a, b) == pytest.approx(mcnemar_exact_counts(15, 26)) and mcnemar_exact(a, b) > 0.05
    assert stats.verdict(delta, low, high, mcnemar_exact(a, b)) == "no significant difference at \u03b1 = 0.05"


def test_known_mcnemar_value():
    # b=10, c=2: two-sided exact p = 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact_counts(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact_counts(10, 2) == pytest.approx(0.0386, abs=5e-5)
    a = [True] * 10 + [False] * 2 + [True] * 5 + [False] * 3    # A right only on the first 10
    b = [False] * 10 + [True] * 2 + [True] * 5 + [False] * 3    # B right only on the next 2
    assert discordant_counts(a, b) == (10, 2)
    assert mcnemar_exact(a, b) == pytest.approx(158 / 4096)
    assert mcnemar_exact_counts(5, 5) == 1.0
    assert mcnemar_exact_counts(0, 6) == pytest.approx(2 / 64)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap_delta([1, 0], [1])
    with pytest.raises(ValueError, match="empty"):
        mcnemar_exact([], [])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5, 1], [1, 1])
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap_delta([1], [0], n_boot=0)


def test_verdict_words():
    assert stats.verdict(0.025, -0.01, 0.06, 0.21) == "no significant difference at \u03b1 = 0.05"
    assert stats.verdict(0.1, 0.05, 0.15, 0.001) == "significantly better at \u03b1 = 0.05"
    assert stats.verdict(-0.1, -0.15, -0.05, 0.001) == "significantly worse at \u03b1 = 0.05"
    assert "bootstrap CI includes 0" in stats.verdict(0.02, -0.001, 0.04, 0.04)
    assert "bootstrap CI excludes 0" in stats.verdict(0.02, 0.001, 0.04, 0.06)
