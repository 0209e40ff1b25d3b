"""Statistics over seeds for ``lowres report``: summaries, 95 % intervals, paired comparisons,
and Holm's correction over a declared family of primary comparisons; and a bootstrap over the
test questions, for the other source of uncertainty (which questions were asked).

Few-shot scores move a lot from seed to seed, and sweeps have few seeds (3-5), so intervals
use Student's t, not the normal approximation (with 3 seeds the 97.5 % quantile is 4.30, not
1.96). The t quantile is computed here, exactly for integer degrees of freedom, so the
report needs no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` (integer) degrees of freedom.

    The closed form of Abramowitz & Stegun 26.7.3/26.7.4: a finite series in cos(theta),
    theta = atan(t / sqrt(df)); exact for every integer df.
    """
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd
        term, total = math.cos(theta), 0.0
        if df > 1:
            total = term
            for j in range(3, df - 1, 2):
                term *= c2 * (j - 1) / j
                total += term
        return 2 / math.pi * (theta + s * total)
    term = total = 1.0
    for j in range(2, df - 1, 2):
        term *= c2 * (j - 1) / j
        total += term
    return s * total


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided critical value t with P(|T| < t) = confidence (4.303 for df = 2)."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    low, high = 0.0, 1.0
    while _t_two_sided(high, df) < confidence:
        high *= 2
    for _ in range(200):  # bisection to double precision
        middle = (low + high) / 2
        if _t_two_sided(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def summary(values: list[float]) -> dict[str, Any]:
    """Mean, sample std, min/max/range, CV and the 95 % t-interval of the mean over seeds."""
    n = len(values)
    mean = statistics.fmean(values)
    # One seed has no spread to report; None, not a misleading 0.
    std = statistics.stdev(values) if n > 1 else None
    half = t_quantile(n - 1) * std / math.sqrt(n) if std is not None else None
    return {
        "mean": mean,
        "std": std,
        "min": min(values),
        "max": max(values),
        "range": max(values) - min(values),
        "cv": std / mean if std is not None and mean else None,
        "ci95_low": mean - half if half is not None else None,
        "ci95_high": mean + half if half is not None else None,
        "n": n,
    }


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """A - B over the seeds both have (same seed: same k-shot sample and data order).

    Pairing removes what the seed does to both methods alike (an easy or hard k-shot
    sample), so the question is whether the mean difference stands out from the spread of
    the differences: ``larger_than_seed_spread`` is true when the 95 % t-interval of the
    mean difference excludes 0 (a paired t-test at the 5 % level); None with one pair.
    """
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    differences = [a[s] - b[s] for s in seeds]
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return {
            "seeds": seeds,
            "n": n,
            "mean_difference": mean,
            "std_difference": None,
            "ci95_low": None,
            "ci95_high": None,
            "t": None,
            "p": None,
            "larger_than_seed_spread": None,
        }
    std = statistics.stdev(differences)
    half = t_quantile(n - 1) * std / math.sqrt(n)
    t = mean / (std / math.sqrt(n)) if std > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return {
        "seeds": seeds,
        "n": n,
        "mean_difference": mean,
        "std_difference": std,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "t": t,
        "p": t_p_value(t, n - 1),
        "larger_than_seed_spread": bool(mean - half > 0 or mean + half < 0),
    }


def t_p_value(t: float, df: int) -> float:
    """Two-sided p-value of Student's t statistic ``t`` with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return max(0.0, 1.0 - _t_two_sided(abs(t), df))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (family-wise error control).

    Sorted ascending, the i-th smallest (0-based) is multiplied by m - i; adjusted values are
    made non-decreasing in that order and capped at 1. Reject where adjusted p <= alpha: the
    same decisions as Holm's procedure at level alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_family(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's adjusted p-values over a whole pre-registered family, some not yet tested.

    ``None`` marks a member with no test (not run, or one seed); it counts as p = 1 and gets
    no adjusted value. So a report of a study still running corrects for as many tests as
    the finished one will, never for fewer, and cannot call a difference that the whole
    family would not.
    """
    adjusted = holm([1.0 if p is None else p for p in p_values])
    return [None if p is None else q for p, q in zip(p_values, adjusted, strict=True)]


def bootstrap_mean(
    groups: Sequence[Sequence[float]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """The mean of the groups' means and its percentile bootstrap interval over their items.

    Each resample draws every group's items with replacement, as many as it has (stratified:
    a language keeps its size), and takes the mean of the group means; the interval is the
    central ``confidence`` share of those resamples. With per-question scores of fixed
    models as items and languages as groups, it says how much the score could move with
    other questions of the same kind; it says nothing of seeds. Seeded, so a report rebuilt
    from the same scores gives the same interval.
    """
    arrays = [np.asarray(group, dtype=float) for group in groups]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("a bootstrap needs at least one group, and an item in every group")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.zeros(resamples)
    for values in arrays:
        drawn = rng.integers(0, values.size, size=(resamples, values.size))
        means += values[drawn].mean(axis=1)
    means /= len(arrays)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {
        "mean": statistics.fmean(float(a.mean()) for a in arrays),
        "ci95_low": float(low),
        "ci95_high": float(high),
        "items": [int(a.size) for a in arrays],
        "resamples": resamples,
        "seed": seed,
    }


def paired_bootstrap(
    a: Mapping[str, Mapping[str, float]],
    b: Mapping[str, Mapping[str, float]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """A - B by question, bootstrapped over the questions (see :func:`bootstrap_mean`).

    ``a`` and ``b`` map a group (a language) to each question's score; each question is
    paired with itself, so what both methods find hard cancels out. Only the groups and
    questions both have count; None when they share none.
    """
    groups = []
    for group in sorted(set(a) & set(b)):
        shared = sorted(set(a[group]) & set(b[group]))
        if shared:
            groups.append([a[group][q] - b[group][q] for q in shared])
    if not groups:
        return None
    return bootstrap_mean(groups, resamples=resamples, seed=seed)
