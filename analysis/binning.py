"""Group hyperparameter values for plotting: grid values as they are, sampled values in log bins."""

from __future__ import annotations

import itertools
import math

import numpy as np

MAX_CATEGORIES = 10  # more distinct values than this means the axis was sampled, not gridded
N_BINS = 8


def axis_groups(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map each value to a group index and return (indices, labels of all groups, ascending).

    Up to MAX_CATEGORIES distinct values: one group per value. More (random search): N_BINS
    log-spaced bins over the positive values, with zero (e.g. "no weight decay") its own group.
    NaNs are not expected (callers drop them).
    """
    values = np.asarray(values, dtype=float)
    distinct = np.unique(values)
    if distinct.size <= MAX_CATEGORIES:
        return np.searchsorted(distinct, values), [format_value(v) for v in distinct]
    positive = values[values > 0]
    edges = np.geomspace(positive.min(), positive.max(), N_BINS + 1)
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, N_BINS - 1)
    labels = [f"{lo:.0e}–{hi:.0e}" for lo, hi in itertools.pairwise(edges)]
    if (values <= 0).any():
        return np.where(values > 0, bins + 1, 0), ["0" if values.min() == 0 else "≤0", *labels]
    return bins, labels


def format_value(value: float) -> str:
    """Short human form of a hyperparameter value: 0.003, 0.1, 1e-05, 3e-04, 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool | str):
        return str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.0e}"
