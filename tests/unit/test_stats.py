"""attention_cnn/report/stats.py: the paired bootstrap and the exact McNemar test can say "no" as well as "yes"."""
from __future__ import annotations

import math
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
    assert imported <= {"__future__", "dataclasses", "math", "typing", "numpy", "scipy"}, imported


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


# ----------------------------------------------------------------------------- the seed as the unit


def seed_pair(n: int, only_a: int, only_b: int, both: int):
    """Correctness vectors on n examples: ``only_a`` only A right, ``only_b`` only B right, ``both`` both right."""
    a = np.zeros(n, bool)
    b = np.zeros(n, bool)
    a[:only_a] = True
    b[only_a:only_a + only_b] = True
    a[only_a + only_b:only_a + only_b + both] = b[only_a + only_b:only_a + only_b + both] = True
    return a, b


def test_known_paired_t_values():
    # 3 seeds, differences 2, 4, 6 points: mean 4, sd 2, t = 4 / (2 / sqrt 3) = sqrt 12, df 2;
    # Student's t with 2 df has the closed form two-sided p = 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(12 / 14)
    assert stats.paired_t_p([0.02, 0.04, 0.06]) == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert stats.paired_t_p([0.02, 0.04, 0.06]) == pytest.approx(0.07418, abs=1e-5)
    # 2 seeds, 1 and 3 points: t = 2 / (sqrt 2 / sqrt 2) = 2, df 1 (Cauchy): p = 1 - (2 / pi) atan 2
    assert stats.paired_t_p([0.01, 0.03]) == pytest.approx(1 - 2 / math.pi * math.atan(2), rel=1e-9)
    # sign does not matter (two-sided); matches scipy's paired test on the accuracies themselves
    from scipy.stats import ttest_rel

    acc_a, acc_b = [0.90, 0.91, 0.88, 0.93], [0.92, 0.90, 0.93, 0.95]
    deltas = [y - x for x, y in zip(acc_a, acc_b)]
    assert stats.paired_t_p(deltas) == pytest.approx(ttest_rel(acc_b, acc_a).pvalue, rel=1e-9)
    assert stats.paired_t_p([-d for d in deltas]) == pytest.approx(stats.paired_t_p(deltas), rel=1e-12)
    # degenerate cases: one seed, and every seed moved by the same amount
    assert math.isnan(stats.paired_t_p([0.05]))
    assert stats.paired_t_p([0.0, 0.0, 0.0]) == 1.0 and stats.paired_t_p([0.02, 0.02, 0.02]) == 0.0


def test_pooled_mcnemar_significant_but_seeds_disagree():
    """Three seeds, 100 test examples each: the variant gains 20 and 15 points on two seeds and loses 5 on the
    third. Pooled, 35 of 40 discordant pairs favour it (McNemar p < 0.001); with the seed as the unit the gaps
    have opposite signs and the t-test (p = 0.32 by hand) and the hierarchical bootstrap do not back it."""
    per_seed = [seed_pair(100, 0, 20, 60), seed_pair(100, 5, 0, 70), seed_pair(100, 0, 15, 60)]
    pooled_a = np.concatenate([a for a, _ in per_seed])
    pooled_b = np.concatenate([b for _, b in per_seed])
    assert discordant_counts(pooled_a, pooled_b) == (5, 35)
    p_pooled = mcnemar_exact(pooled_a, pooled_b)
    delta, low, high = paired_bootstrap_delta(pooled_a, pooled_b)
    assert p_pooled < 0.001 and low > 0
    assert stats.verdict(delta, low, high, p_pooled) == "significantly better at \u03b1 = 0.05"

    res = stats.seed_level_test(per_seed, n_boot=4000, seed=0)
    assert res.seeds == 3 and res.tested
    assert res.deltas == pytest.approx((0.20, -0.05, 0.15))
    assert res.mean == pytest.approx(0.10) and res.sd == pytest.approx(math.sqrt(0.0175))
    t = 0.10 / (math.sqrt(0.0175) / math.sqrt(3))
    assert res.t_p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert res.t_p == pytest.approx(0.3206, abs=1e-4)
    # 1 replicate in 27 draws the losing seed three times, so the 2.5 % quantile sits near -5 points
    assert res.ci_low < 0 < res.ci_high
    assert stats.verdict(res.mean, res.ci_low, res.ci_high, res.t_p) == "no significant difference at \u03b1 = 0.05"


def test_consistent_seeds_are_significant_at_the_seed_level():
    per_seed = [seed_pair(400, 2, 30, 300), seed_pair(400, 3, 28, 300), seed_pair(400, 1, 33, 300)]
    res = stats.seed_level_test(per_seed, n_boot=4000, seed=0)
    assert res.t_p < 0.01 and 0 < res.ci_low < res.mean < res.ci_high


def test_hierarchical_bootstrap_matches_resampling_seeds_then_examples():
    """The per-seed multinomial shortcut draws from the same distribution as resampling seed ids and then
    example indices within each drawn seed."""
    per_seed = [correlated_pair(150, 0.7, 0.74 + 0.03 * s, seed=10 + s) for s in range(4)]
    low, high = stats.hierarchical_bootstrap(per_seed, n_boot=20000, seed=1)
    rng = np.random.default_rng(5)
    reps = np.empty(20000)
    for r in range(len(reps)):
        total = 0.0
        for s in rng.integers(0, 4, size=4):
            a, b = per_seed[s]
            idx = rng.integers(0, len(a), size=len(a))
            total += b[idx].mean() - a[idx].mean()
        reps[r] = total / 4
    naive_low, naive_high = np.quantile(reps, [0.025, 0.975])
    assert low == pytest.approx(naive_low, abs=0.006) and high == pytest.approx(naive_high, abs=0.006)


def test_hierarchical_bootstrap_widens_with_the_seed_spread():
    """Same pooled counts, but the per-seed gaps vary: the seed-level interval is wider than the pooled one."""
    steady = [seed_pair(300, 10, 25, 200)] * 3
    spread = [seed_pair(300, 10, 5, 200), seed_pair(300, 10, 25, 200), seed_pair(300, 10, 45, 200)]
    lo_s, hi_s = stats.hierarchical_bootstrap(steady, n_boot=4000, seed=0)
    lo_v, hi_v = stats.hierarchical_bootstrap(spread, n_boot=4000, seed=0)
    assert hi_v - lo_v > 1.5 * (hi_s - lo_s)


def test_seed_level_test_is_deterministic_and_needs_three_seeds():
    per_seed = [correlated_pair(200, 0.8, 0.82, seed=s) for s in range(3)]
    assert stats.seed_level_test(per_seed, seed=3) == stats.seed_level_test(per_seed, seed=3)
    two = stats.seed_level_test(per_seed[:2])
    assert not two.tested and two.seeds == 2 and not math.isnan(two.sd)
    assert math.isnan(two.t_p) and math.isnan(two.ci_low) and math.isnan(two.ci_high)
    one = stats.seed_level_test(per_seed[:1])
    assert math.isnan(one.sd) and one.mean == pytest.approx(one.deltas[0])
    with pytest.raises(ValueError, match="no seeds"):
        stats.seed_level_test([])
    with pytest.raises(ValueError, match="same length"):
        stats.seed_level_test([([1, 0], [1])] * 3)


def test_verdict_names_the_test_it_used():
    text = stats.verdict(0.02, -0.001, 0.04, 0.04, test="paired t-test over seeds",
                         interval="hierarchical bootstrap CI")
    assert text == ("significantly better at \u03b1 = 0.05 (paired t-test over seeds), though the hierarchical "
                    "bootstrap CI includes 0")


def test_known_wilson_and_t_intervals():
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.7167, half-width 0.2266
    low, high = stats.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # 100 % right still has width (the normal approximation would give 1.0 to 1.0)
    low, high = stats.wilson_interval(300, 300)
    assert high == pytest.approx(1.0) and low == pytest.approx(300 / (300 + 1.959964 ** 2), abs=1e-6)
    # 3 seeds at 95, 96, 97 %: mean 96, sd 1, t(0.975, 2) = 4.302653: 96 ± 2.4841 points
    low, high = stats.mean_t_interval([0.95, 0.96, 0.97])
    assert (low, high) == pytest.approx((0.96 - 0.024841, 0.96 + 0.024841), abs=1e-6)
    with pytest.raises(ValueError, match="correct"):
        stats.wilson_interval(11, 10)
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_t_interval([0.9])


def test_welch_difference_matches_scipys_welch_test():
    """The recipes' lever comparison: the same interval and p as scipy's own Welch test; no spread, no test."""
    from scipy.stats import ttest_ind

    from attention_cnn.report.stats import welch_difference

    for a, b in (([0.95, 0.96, 0.97], [0.90, 0.92, 0.91]), ([0.95, 0.94, 0.96, 0.90], [0.948, 0.936])):
        delta, low, high, p = welch_difference(a, b)
        reference = ttest_ind(a, b, equal_var=False)
        interval = reference.confidence_interval(0.95)
        assert delta == pytest.approx(np.mean(a) - np.mean(b))
        assert (low, high, p) == pytest.approx((interval.low, interval.high, reference.pvalue), rel=1e-9)
    delta, low, high, p = welch_difference([1.0, 1.0, 1.0], [0.9, 0.9])
    assert (low, high) == (delta, delta) and math.isnan(p)
    with pytest.raises(ValueError, match="at least 2 values a side"):
        welch_difference([0.9], [0.8, 0.7])
