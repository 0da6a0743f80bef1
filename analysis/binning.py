"""Group hyperparameter values for plotting: grid values as they are, sampled values in log bins.

The labels of one axis are all of one kind: exact values ("0", "0.001", "0.003") or ranges between
round log edges ("0", "1e-05–3e-05", "3e-05–1e-04"), and all in one style (plain, or scientific
notation when any number is below 0.001). Zero (e.g. "no weight decay") is always a group of its
own, and no two groups share a label.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

MAX_CATEGORIES = 10  # more distinct values than this means the axis was sampled, not gridded
MAX_EXACT_DIGITS = 3  # a value written with more significant digits was sampled, not typed in a grid
N_BINS = 8  # at most this many log bins over the positive values (plus one group for zero)

# Bin edges tried from finest to coarsest, as mantissas within a decade; then whole decades
# skipped in strides of 2, 3, ... decades.
_EDGE_MANTISSAS = ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1, 3), (1,))
_PLAIN_RANGE = (1e-3, 1e4)  # magnitudes written without an exponent, as in `format_value`


def axis_groups(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map each value to a group index and return (indices, labels of all groups, ascending).

    A grid (up to MAX_CATEGORIES distinct values, each with at most MAX_EXACT_DIGITS significant
    digits): one group per value, labelled with the exact value; a single value is one group too.
    Otherwise (random search): log bins with round edges (`nice_log_edges`) over the positive
    values, labelled "low–high", with zero (or anything not positive) a group of its own. NaNs are
    not expected (callers drop them).
    """
    values = np.asarray(values, dtype=float)
    distinct = np.unique(values)
    exact = _exact_labels(distinct) if distinct.size <= MAX_CATEGORIES else None
    if exact is None and distinct.size == 1:  # one sampled value: shown to 3 significant digits
        exact = _styled(np.array([float(f"{distinct[0]:.{MAX_EXACT_DIGITS - 1}e}")]))
    if exact is not None:
        return np.searchsorted(distinct, values), exact
    positive = values[values > 0]
    if positive.size == 0:
        return np.zeros(values.size, dtype=int), ["≤0"]
    edges = nice_log_edges(float(positive.min()), float(positive.max()))
    n_bins = edges.size - 1
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    texts = _styled(edges)
    labels = [f"{low}–{high}" for low, high in itertools.pairwise(texts)]
    if (values <= 0).any():
        return np.where(values > 0, bins + 1, 0), ["0" if values.min() == 0 else "≤0", *labels]
    return bins, labels


def nice_log_edges(low: float, high: float, max_bins: int = N_BINS) -> np.ndarray:
    """Ascending bin edges at round numbers (1-2-3-...-9, then 1-2-5, 1-3, 1 per decade, then one
    every 2, 3, ... decades: the finest that needs at most `max_bins` bins) with
    edges[0] <= low <= high <= edges[-1]; at least one bin. `low` must be positive."""
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"need 0 < low <= high < inf, got {low}, {high}")
    bottom, top = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ladders = [(mantissas, 1) for mantissas in _EDGE_MANTISSAS]
    ladders += [((1,), stride) for stride in range(2, top - bottom + 2)]
    for mantissas, stride in ladders:
        exponents = [e for e in range(bottom - stride, top + stride + 1) if e % stride == 0]
        candidates = np.array(sorted(float(f"{m}e{e}") for e in exponents for m in mantissas))
        start = int(np.searchsorted(candidates, low, side="right")) - 1
        stop = max(int(np.searchsorted(candidates, high, side="left")), start + 1)
        if stop - start <= max_bins:
            return candidates[start : stop + 1]
    raise AssertionError("unreachable: a stride wider than the range needs at most two bins")


def format_value(value: float) -> str:
    """A hyperparameter value to three significant figures: 0.003, 0.1, 0.000205, 1e-05, 2.05e-05, 0 (a
    configuration's values must be told apart: 0.000205 is not 2e-04), and to as many as it takes not to
    round a beta such as 0.9995 onto 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if value == 0:
        return "0"
    for digits in range(3, 10):  # more digits only where three would round a value onto another one
        text = f"{value:.{digits}g}"
        if float(text) not in (0.0, 1.0, -1.0) or abs(value) in (0.0, 1.0):
            return text
    return repr(float(value))


def _exact_labels(distinct: np.ndarray) -> list[str] | None:
    """The exact labels of grid values, or None if any value needs more than MAX_EXACT_DIGITS."""
    for value in distinct:
        if value != 0 and float(f"{value:.{MAX_EXACT_DIGITS - 1}e}") != value:
            return None
    return _styled(distinct)


def _styled(numbers: np.ndarray) -> list[str]:
    """Shortest exact text of each number, all plain or all scientific (by the whole axis)."""
    magnitudes = np.abs(numbers[numbers != 0])
    plain = bool(np.all((magnitudes >= _PLAIN_RANGE[0]) & (magnitudes < _PLAIN_RANGE[1])))
    texts = []
    for number in numbers:
        if number == 0:
            texts.append("0")
        elif plain:
            texts.append(np.format_float_positional(number, trim="-"))
        else:
            texts.append(np.format_float_scientific(number, trim="-", exp_digits=2))
    return texts
