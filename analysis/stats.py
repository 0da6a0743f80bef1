"""The statistics of the report, each in one place: bootstrap intervals and expected maxima (minima)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optsweep.vocabulary import MODES

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval for a mean. `degenerate` is True when it was computed
    from fewer than two values, i.e. it says nothing about uncertainty."""

    low: float
    high: float
    n: int

    @property
    def degenerate(self) -> bool:
        return self.n < 2

    def overlaps(self, other: Interval) -> bool:
        return bool(self.low <= other.high and other.low <= self.high)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap interval of the mean of `values` (NaNs dropped).

    Deterministic for a given seed: resample indices are drawn at once as an
    (n_resamples, n) array from ``numpy.random.default_rng(seed).integers(0, n, ...)``.
    With one value the interval is that value (degenerate); with none it is NaN.
    Note that with very few values (say < 5 seeds) percentile intervals come out too narrow.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return Interval(np.nan, np.nan, 0)
    if n == 1:
        return Interval(float(x[0]), float(x[0]), 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(low), float(high), n)


def expected_max_curve(scores: Sequence[float] | np.ndarray, k_max: int | None = None) -> pd.DataFrame:
    """Expected best score after k random trials, k = 1..k_max (Dodge et al. 2019, "Show Your Work").

    The n observed scores (NaNs dropped) are treated as the distribution of one random trial;
    k trials are k draws with replacement, so with sorted scores v_(1) <= ... <= v_(n)
        E[max_k] = sum_i v_(i) * ((i/n)^k - ((i-1)/n)^k).
    Returns columns k, expected_max and std (the standard deviation of that maximum, from
    E[max_k^2] with the same weights). k_max defaults to n; an empty input gives an empty frame.
    """
    v = np.sort(np.asarray(scores, dtype=float))
    v = v[~np.isnan(v)]
    n = v.size
    k_max = n if k_max is None else k_max
    if n == 0 or k_max < 1:
        return pd.DataFrame({"k": pd.Series(dtype="int64"), "expected_max": [], "std": []})
    k = np.arange(1, k_max + 1)
    cdf = np.arange(0, n + 1) / n  # P(one draw <= v_(i)) for i = 0..n
    powers = cdf[None, :] ** k[:, None]
    weights = powers[:, 1:] - powers[:, :-1]  # P(max of k draws is v_(i)), shape (k_max, n)
    mean = weights @ v
    variance = np.clip(weights @ (v**2) - mean**2, 0.0, None)
    return pd.DataFrame({"k": k, "expected_max": mean, "std": np.sqrt(variance)})


def expected_column(mode: str) -> str:
    """The expected-best column of `expected_best_curve`: expected_max, or expected_min."""
    return f"expected_{mode}"


def expected_best_curve(
    scores: Sequence[float] | np.ndarray, mode: str, k_max: int | None = None
) -> pd.DataFrame:
    """`expected_max_curve` in the direction of `mode`: for "min" the expected minimum of k
    draws, E[min_k] = -E[max_k of the negated scores], in a column named expected_min."""
    if mode not in MODES:
        raise ValueError(f"invalid mode {mode!r}; allowed: {', '.join(MODES)}")
    sign = 1.0 if mode == "max" else -1.0
    curve = expected_max_curve(sign * np.asarray(scores, dtype=float), k_max)
    curve["expected_max"] = sign * curve["expected_max"] + 0.0  # + 0.0: no "-0.0"
    return curve.rename(columns={"expected_max": expected_column(mode)})
