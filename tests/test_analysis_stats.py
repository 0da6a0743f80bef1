"""Bootstrap intervals and expected-maximum curves against direct, slow computations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from optsweep.analysis import bootstrap_ci, expected_max_curve, t_interval
from optsweep.analysis.stats import Interval, detectable_difference, holm, t_intervals, welch_differences


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


# --- t-intervals, Welch's test, Holm's correction --------------------------------------------


@pytest.mark.parametrize("values", [[0.91, 0.935, 0.94], [0.91, 0.935, 0.94, 0.952, 0.948], [1.0, 2.0]])
def test_t_interval_is_scipys(values: list[float]) -> None:
    interval = t_interval(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, np.mean(values), scipy_stats.sem(values))
    assert (interval.low, interval.high, interval.n) == (pytest.approx(low), pytest.approx(high), len(values))
    lows, highs = t_intervals([np.mean(values)], [np.std(values, ddof=1)], [len(values)])
    assert (lows[0], highs[0]) == (pytest.approx(low), pytest.approx(high))


def test_t_interval_edge_cases() -> None:
    assert t_interval([0.93]) == Interval(0.93, 0.93, 1)
    assert t_interval([0.5, 0.5, 0.5]) == Interval(0.5, 0.5, 3)
    empty = t_interval([np.nan])
    assert empty.n == 0 and np.isnan(empty.low)


def test_welch_differences_are_scipys() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.95, 0.01, 5), rng.normal(0.94, 0.02, 7)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    got = welch_differences(
        (np.array([a.mean()]), np.array([a.std(ddof=1)]), np.array([5])),
        (np.array([b.mean()]), np.array([b.std(ddof=1)]), np.array([7])),
    )
    interval = reference.confidence_interval(0.95)
    assert got.p_value[0] == pytest.approx(reference.pvalue)
    assert (got.low[0], got.high[0]) == (pytest.approx(interval.low), pytest.approx(interval.high))
    with pytest.raises(ValueError, match="at least 2 values a side"):
        welch_differences(
            (np.array([0.9]), np.array([0.1]), np.array([1])),
            (np.array([0.9]), np.array([0.1]), np.array([3])),
        )


def test_holm() -> None:
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).size == 0


@pytest.mark.parametrize(("n_seeds", "pairs"), [(3, 1), (5, 3)])
def test_detectable_difference_is_found_80_percent_of_the_time(n_seeds: int, pairs: int) -> None:
    delta = detectable_difference(n_seeds, pairs)
    rng = np.random.default_rng(4)
    a = rng.normal(delta, 1.0, (20_000, n_seeds))
    b = rng.normal(0.0, 1.0, (20_000, n_seeds))
    found = scipy_stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05 / pairs
    assert found.mean() == pytest.approx(0.8, abs=0.02)
