"""Paired statistics for "is variant B really better than variant A on the same test set?" (numpy + scipy only).

Both tests work on *paired correctness vectors*: ``correct_a[i]`` and ``correct_b[i]`` say whether models A and
B got test example ``i`` right (the same example for both: join predictions on their ``index`` column).

* :func:`paired_bootstrap_delta`: the accuracy difference ``B - A`` with a percentile bootstrap confidence
  interval, resampling *examples* (pairs), so the correlation between the two models on easy and hard
  examples is kept.
* :func:`mcnemar_exact`: the exact (binomial) McNemar test on the discordant pairs.

Several seeds: concatenate the per-seed paired vectors (seed ``s`` of A paired with seed ``s`` of B) and call
the functions once. The delta is then the mean over seeds of the per-seed deltas (equal test sets), and the
bootstrap and McNemar treat every (seed, example) pair as one observation: they answer "over these training
runs, does B get more test examples right than A?". They do not model the seed-to-seed variance of training
as a separate source of error.

* :func:`seed_level_test` does, with the seed as the unit: the per-seed accuracy differences (same seed,
  same test examples), a paired t-test over them (exact two-sided p, ``seeds - 1`` degrees of freedom) and a
  hierarchical bootstrap interval that resamples seeds, then examples within each drawn seed. With fewer
  than :data:`MIN_SEEDS` seeds it gives the differences only, and verdicts rest on the pooled tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

ALPHA = 0.05
# Fewest seeds a seed-level test is run on: two differences give a t-test with one degree of freedom
# and a bootstrap that can only draw the same two seeds.
MIN_SEEDS = 3


def _paired(correct_a: Any, correct_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length, non-empty boolean vectors (from bools or 0/1 numbers)."""
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"correctness vectors must be 1-D, got shapes {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"correctness vectors must be paired (same length), got {len(a)} and {len(b)}")
    if len(a) == 0:
        raise ValueError("correctness vectors are empty")
    for name, v in (("correct_a", a), ("correct_b", b)):
        if v.dtype != bool and not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1, got values {sorted(set(np.unique(v).tolist()))[:5]}")
    return a.astype(bool), b.astype(bool)


def discordant_counts(correct_a: Any, correct_b: Any) -> tuple[int, int]:
    """``(b, c)``: examples only A got right, examples only B got right (McNemar's discordant cells)."""
    a, b = _paired(correct_a, correct_b)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def paired_bootstrap_delta(correct_a: Any, correct_b: Any, n_boot: int = 10000, seed: int = 0,
                           confidence: float = 0.95) -> tuple[float, float, float]:
    """``(delta, ci_low, ci_high)``: accuracy of B minus accuracy of A, and its percentile bootstrap CI.

    Fractions, not points (0.025 = 2.5 points). Each bootstrap replicate draws n examples with replacement
    and takes both models' results on the same draws. The per-example difference ``B - A`` is -1, 0 or +1,
    so a replicate's mean depends only on how many draws landed on each of the three kinds; those counts
    are drawn directly as one multinomial(n, observed proportions) per replicate, which is the same
    distribution as resampling indices, without an (n_boot x n) index array. Deterministic for a given
    ``seed`` (numpy's default generator).
    """
    a, b = _paired(correct_a, correct_b)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(a)
    only_b, only_a = int(np.sum(~a & b)), int(np.sum(a & ~b))
    delta = (only_b - only_a) / n
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [only_b / n, only_a / n, (n - only_b - only_a) / n], size=int(n_boot))
    replicates = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(delta), float(low), float(high)


def mcnemar_exact(correct_a: Any, correct_b: Any) -> float:
    """Two-sided exact McNemar p-value: binomial test of b vs c discordant pairs with p = 1/2.

    ``b`` = examples only A got right, ``c`` = examples only B got right; under "no difference" each
    discordant pair is equally likely to fall either way. 1.0 when there are no discordant pairs.
    """
    b, c = discordant_counts(correct_a, correct_b)
    return mcnemar_exact_counts(b, c)


def mcnemar_exact_counts(b: int, c: int) -> float:
    """:func:`mcnemar_exact` from the two discordant counts (e.g. b=10, c=2 gives 0.0386)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(min(1.0, binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue))


def verdict(delta: float, ci_low: float, ci_high: float, p: float, alpha: float = ALPHA,
            test: str = "McNemar", interval: str = "bootstrap CI") -> str:
    """The plain-words conclusion, e.g. ``no significant difference at α = 0.05``.

    Significant only when the test's p < alpha; the direction then comes from the delta. When the test
    and the interval disagree (p < alpha but the CI contains 0, or the reverse), the sentence says so,
    naming them (``test``, ``interval``: McNemar and the paired bootstrap by default).
    """
    ci_excludes_zero = ci_low > 0 or ci_high < 0
    if p < alpha:
        better = "better" if delta > 0 else "worse"
        text = f"significantly {better} at \u03b1 = {alpha:g}"
        if not ci_excludes_zero:
            text += f" ({test}), though the {interval} includes 0"
        return text
    text = f"no significant difference at \u03b1 = {alpha:g}"
    if ci_excludes_zero:
        text += f" ({test}), though the {interval} excludes 0"
    return text


# --------------------------------------------------------------------------- the seed as the unit


@dataclass(frozen=True)
class SeedTest:
    """:func:`seed_level_test`'s result; accuracy differences are fractions (B - A). ``sd``, ``t_p``,
    ``ci_low`` and ``ci_high`` are NaN when there are too few seeds for them."""

    deltas: tuple[float, ...]
    mean: float
    sd: float
    t_p: float
    ci_low: float
    ci_high: float

    @property
    def seeds(self) -> int:
        return len(self.deltas)

    @property
    def tested(self) -> bool:
        """Whether the seed-level test was run (at least MIN_SEEDS seeds)."""
        return self.seeds >= MIN_SEEDS


def paired_t_p(deltas: Sequence[float]) -> float:
    """Exact two-sided p of the paired t-test of "mean difference = 0" over ``deltas`` (one per seed):
    t = mean / (sd / sqrt(k)) with the sample sd, Student's t with k - 1 degrees of freedom.

    NaN for fewer than 2 differences. When every difference is the same (sd 0) the t statistic is
    unbounded: 1.0 if they are all 0, else 0.0 (every seed moved the same way by the same amount).
    """
    d = np.asarray(deltas, dtype=np.float64)
    k = len(d)
    if k < 2:
        return math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0 or np.allclose(d, d[0], rtol=0, atol=1e-15):
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t as student_t

    t = mean / (sd / math.sqrt(k))
    return float(min(1.0, 2 * student_t.sf(abs(t), k - 1)))


def hierarchical_bootstrap(per_seed: Sequence[tuple[Any, Any]], n_boot: int = 10000, seed: int = 0,
                           confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean per-seed accuracy difference, resampling seeds, then examples.

    ``per_seed``: one ``(correct_a, correct_b)`` pair of vectors per seed. Each replicate draws k seeds
    with replacement, then, for each drawn seed, its examples with replacement (the multinomial shortcut
    of :func:`paired_bootstrap_delta`, per seed), and averages the drawn seeds' differences. So the interval
    widens with the seed-to-seed spread as well as with the test set's size. Deterministic for ``seed``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    k = len(per_seed)
    if k == 0:
        raise ValueError("no seeds to resample")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(int(n_boot), k))  # which seed fills each slot of each replicate
    slot_delta = np.empty(draws.shape, dtype=np.float64)
    for s, (correct_a, correct_b) in enumerate(per_seed):
        a, b = _paired(correct_a, correct_b)
        n = len(a)
        only_b, only_a = int(np.sum(~a & b)), int(np.sum(a & ~b))
        where = draws == s
        counts = rng.multinomial(n, [only_b / n, only_a / n, (n - only_b - only_a) / n], size=int(where.sum()))
        slot_delta[where] = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(slot_delta.mean(axis=1), [tail, 1 - tail])
    return float(low), float(high)


def seed_level_test(per_seed: Sequence[tuple[Any, Any]], n_boot: int = 10000, seed: int = 0,
                    confidence: float = 0.95) -> SeedTest:
    """The comparison with the seed as the unit, from one ``(correct_a, correct_b)`` pair per seed.

    The per-seed differences (accuracy of B minus A on that seed's paired examples), their mean and
    sample sd (NaN for one seed); with at least MIN_SEEDS seeds also the paired t-test's p
    (:func:`paired_t_p`) and the hierarchical bootstrap interval (:func:`hierarchical_bootstrap`).
    """
    if not per_seed:
        raise ValueError("no seeds to compare")
    deltas = []
    for correct_a, correct_b in per_seed:
        a, b = _paired(correct_a, correct_b)
        deltas.append(float(b.mean() - a.mean()))
    k = len(deltas)
    mean = float(np.mean(deltas))
    sd = float(np.std(deltas, ddof=1)) if k > 1 else math.nan
    if k < MIN_SEEDS:
        return SeedTest(tuple(deltas), mean, sd, math.nan, math.nan, math.nan)
    low, high = hierarchical_bootstrap(per_seed, n_boot=n_boot, seed=seed, confidence=confidence)
    return SeedTest(tuple(deltas), mean, sd, paired_t_p(deltas), low, high)


# --------------------------------------------------------------------------- one model's accuracy


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``correct / n`` (fractions); stays inside [0, 1] and keeps a
    sensible width at 100 % accuracy, where the normal approximation collapses to a point."""
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got correct={correct}, n={n}")
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (e.g. one accuracy per seed): mean ± t * sd / sqrt(k)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {len(v)}")
    from scipy.stats import t as student_t

    half = float(student_t.ppf(1 - (1 - confidence) / 2, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def welch_difference(a: Sequence[float], b: Sequence[float],
                     confidence: float = 0.95) -> tuple[float, float, float, float]:
    """``mean(a) - mean(b)`` of two independent samples (e.g. per-seed accuracies of two recipes), with Welch's
    t interval (Welch-Satterthwaite degrees of freedom) and two-sided p: ``(delta, low, high, p)``. Each sample
    needs at least 2 values; with no spread on either side the interval is the point and p is NaN (no test)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's test needs at least 2 values a side, got {len(a)} and {len(b)}")
    from scipy.stats import t as student_t

    delta = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return delta, delta, delta, math.nan
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * se
    return delta, delta - half, delta + half, float(2 * student_t.sf(abs(delta) / se, df))
