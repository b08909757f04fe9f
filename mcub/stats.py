"""Paired statistics between two runs on the same items (accuracy difference with a paired bootstrap interval, the
exact McNemar test, Holm's correction across tasks), and the chi-square test of homogeneity of a 2 x K table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """New minus base accuracy (points) on `n` paired items; `base_only` / `new_only` count the discordant items
    that only the base / only the new run got right."""

    n: int
    base_correct: int
    new_correct: int
    base_only: int
    new_only: int
    difference: float
    ci_low: float
    ci_high: float
    p_value: float


def mcnemar_exact(base_only: int, new_only: int) -> float:
    """Two-sided exact McNemar p-value: twice the binomial(b + c, 1/2) tail of the smaller count, capped at 1."""
    discordant = base_only + new_only
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * binomial_lower_tail(min(base_only, new_only), discordant))


def binomial_lower_tail(k: int, n: int) -> float:
    """P(X <= k) for X ~ binomial(n, 1/2), in O(k) float operations: the terms C(n, j) / 2^n for j = k, k-1, ..., 0
    by the recurrence C(n, j-1) = C(n, j) j / (n - j + 1), relative to the largest (j = k when k <= n/2), scaled once
    by C(n, k) / 2^n from log-gamma (relative error about 1e-13 where the tail does not underflow)."""
    if k >= n:
        return 1.0
    if 2 * k > n:
        return 1.0 - binomial_lower_tail(n - k - 1, n)
    total = term = 1.0
    for j in range(k, 0, -1):
        term *= j / (n - j + 1)
        total += term
        if term < total * 1e-17:
            break
    log_largest = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    return min(1.0, total * math.exp(log_largest))


def paired_bootstrap(n: int, base_only: int, new_only: int, seed: int) -> tuple[float, float]:
    """95% percentile interval (points) of the mean paired difference. Resampling n items with replacement draws
    each item's difference (-1, 0, +1) independently, so a resample's counts are multinomial: drawn as such."""
    import numpy as np

    if n == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    probabilities = [base_only / n, new_only / n, (n - base_only - new_only) / n]
    counts = rng.multinomial(n, probabilities, size=BOOTSTRAP_RESAMPLES)
    differences = (counts[:, 1] - counts[:, 0]) / n * 100
    low, high = np.percentile(differences, [2.5, 97.5])
    return round(float(low), 4), round(float(high), 4)


def paired_difference(base: Sequence[bool], new: Sequence[bool], seed: int) -> PairedDifference:
    """Compare two runs' correctness on the same items, in the same order."""
    if len(base) != len(new):
        raise ValueError("paired outcomes must have the same length")
    n = len(base)
    base_only = sum(1 for b, c in zip(base, new, strict=True) if b and not c)
    new_only = sum(1 for b, c in zip(base, new, strict=True) if c and not b)
    low, high = paired_bootstrap(n, base_only, new_only, seed)
    return PairedDifference(
        n=n,
        base_correct=sum(map(bool, base)),
        new_correct=sum(map(bool, new)),
        base_only=base_only,
        new_only=new_only,
        difference=round((new_only - base_only) / n * 100, 4) if n else 0.0,
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact(base_only, new_only),
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(p_values)), key=lambda index: p_values[index])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class ChiSquare:
    """A chi-square test: the statistic, its degrees of freedom and the upper-tail p-value."""

    statistic: float
    df: int
    p_value: float
    min_expected: float
    """The smallest expected cell count (the chi-square approximation wants about 5 or more)."""


def chi_square_homogeneity(table: Sequence[Sequence[int]]) -> ChiSquare | None:
    """Pearson's chi-square test that the columns of a table of counts share one distribution over its rows. Rows
    and columns whose counts are all zero are left out; None when fewer than two of either remain."""
    rows = [row for row in table if sum(row) > 0]
    columns = [column for column in zip(*rows, strict=True) if sum(column) > 0] if rows else []
    if len(rows) < 2 or len(columns) < 2:
        return None
    row_totals = [sum(column[index] for column in columns) for index in range(len(rows))]
    column_totals = [sum(column) for column in columns]
    total = sum(column_totals)
    statistic, min_expected = 0.0, math.inf
    for column, column_total in zip(columns, column_totals, strict=True):
        for observed, row_total in zip(column, row_totals, strict=True):
            expected = row_total * column_total / total
            statistic += (observed - expected) ** 2 / expected
            min_expected = min(min_expected, expected)
    df = (len(rows) - 1) * (len(columns) - 1)
    return ChiSquare(statistic, df, chi_square_sf(statistic, df), min_expected)


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square with `df` degrees of freedom: the regularised upper incomplete gamma
    Q(df/2, x/2)."""
    if df < 1:
        raise ValueError(f"chi-square degrees of freedom must be at least 1, not {df}")
    if x <= 0:
        return 1.0
    return regularized_upper_gamma(df / 2, x / 2)


GAMMA_EPSILON = 1e-16
GAMMA_MAX_TERMS = 10_000


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), for a > 0 and x >= 0: by the power series of P = 1 - Q when x < a + 1,
    else by the continued fraction of Q (modified Lentz), each to about 1e-15 relative error."""
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        for n in range(1, GAMMA_MAX_TERMS):
            term *= x / (a + n)
            total += term
            if abs(term) < abs(total) * GAMMA_EPSILON:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    fraction = d
    for n in range(1, GAMMA_MAX_TERMS):
        an = -n * (n - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < GAMMA_EPSILON:
            break
    return math.exp(log_prefix) * fraction
