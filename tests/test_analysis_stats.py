"""Bootstrap intervals and expected-maximum curves against direct, slow computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import bootstrap_ci, expected_max_curve
from analysis.stats import Interval


def _bootstrap_by_hand(values: list[float], n_resamples: int, seed: int) -> tuple[float, float]:
    """The same percentile bootstrap, one resample at a time, from the same random stream."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(n_resamples, len(values)))
    means = [sum(values[i] for i in row) / len(values) for row in draws]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_bootstrap_matches_a_direct_computation() -> None:
    values = [0.91, 0.935, 0.94, 0.952, 0.948]
    interval = bootstrap_ci(values, n_resamples=10_000, seed=7)
    low, high = _bootstrap_by_hand(values, 10_000, 7)
    assert interval.low == pytest.approx(low, abs=1e-12)
    assert interval.high == pytest.approx(high, abs=1e-12)
    assert interval.n == 5 and not interval.degenerate
    assert interval.low < np.mean(values) < interval.high


def test_bootstrap_is_deterministic_and_at_least_10k_resamples_by_default() -> None:
    values = np.array([0.1, 0.5, 0.3, 0.8])
    assert bootstrap_ci(values) == bootstrap_ci(values.copy())
    low, high = _bootstrap_by_hand(list(values), 10_000, 0)
    assert bootstrap_ci(values).low == pytest.approx(low) and bootstrap_ci(values).high == pytest.approx(high)


def test_bootstrap_interval_narrows_with_more_seeds() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.9, 0.01, 5), rng.normal(0.9, 0.01, 500)

    def width(values: np.ndarray) -> float:
        interval = bootstrap_ci(values)
        return interval.high - interval.low

    assert width(many) < width(few) / 4
    # The interval of the mean of many normal draws is close to mean +- 1.96 sigma / sqrt(n).
    assert width(many) == pytest.approx(2 * 1.96 * many.std(ddof=1) / np.sqrt(500), rel=0.1)


def test_degenerate_and_empty_intervals() -> None:
    one = bootstrap_ci([0.93])
    assert (one.low, one.high, one.n, one.degenerate) == (0.93, 0.93, 1, True)
    none = bootstrap_ci([np.nan])
    assert none.n == 0 and np.isnan(none.low) and none.degenerate


def test_interval_overlap() -> None:
    assert Interval(0.1, 0.3, 3).overlaps(Interval(0.3, 0.4, 3))
    assert not Interval(0.1, 0.29, 3).overlaps(Interval(0.3, 0.4, 3))


def _expected_max_brute_force(scores: list[float], k: int) -> float:
    """Average of the maximum over every ordered k-tuple drawn with replacement."""
    tuples = list(itertools.product(scores, repeat=k))
    return sum(max(t) for t in tuples) / len(tuples)


@pytest.mark.parametrize("scores", [[0.5], [0.9, 0.1], [0.3, 0.3, 0.9, 0.6], [0.0, 0.8, 0.81, 0.79, 0.5]])
def test_expected_max_matches_brute_force(scores: list[float]) -> None:
    curve = expected_max_curve(scores, k_max=4)
    assert curve["k"].tolist() == [1, 2, 3, 4]
    for k in range(1, 5):
        expected = _expected_max_brute_force(scores, k)
        assert curve.loc[k - 1, "expected_max"] == pytest.approx(expected, abs=1e-12)
        tuples = list(itertools.product(scores, repeat=k))
        maxima = np.array([max(t) for t in tuples])
        assert curve.loc[k - 1, "std"] == pytest.approx(maxima.std(), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_expected_max_properties(scores: list[float]) -> None:
    curve = expected_max_curve(scores)
    values = curve["expected_max"].to_numpy()
    assert len(values) == len(scores)
    assert values[0] == pytest.approx(np.mean(scores), abs=1e-9)  # one trial: the average score
    assert np.all(np.diff(values) >= -1e-12)  # more trials never hurt
    assert values[-1] <= max(scores) + 1e-12
    many_trials = expected_max_curve(scores, k_max=2000)["expected_max"].iloc[-1]
    assert many_trials == pytest.approx(max(scores), abs=1e-3)


def test_expected_max_drops_nans_and_handles_empty_input() -> None:
    assert expected_max_curve([0.2, np.nan, 0.4])["k"].tolist() == [1, 2]
    assert expected_max_curve([]).empty
