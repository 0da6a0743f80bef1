"""How the target metric is written in the report: its name in words, its direction, its digits."""

from __future__ import annotations

import math
from collections.abc import Iterable

from optsweep.vocabulary import Target

_WORDS = {"acc": "accuracy", "mse": "MSE", "mae": "MAE", "rmse": "RMSE"}  # names written otherwise in words
DIGITS = 3  # decimals below the leading power of ten: accuracy in (0.1, 1] gets 3, as "0.953"


def words(target: Target) -> str:
    """The metric in words: "accuracy", "perplexity", "mse"."""
    return _WORDS.get(target.metric, target.metric.replace("_", " "))


def val_words(target: Target) -> str:
    """ "validation accuracy" """
    return f"validation {words(target)}"


def test_words(target: Target) -> str:
    """ "test accuracy" """
    return f"test {words(target)}"


def short_val(target: Target) -> str:
    """For table headers: "val acc"."""
    return f"val {target.metric.replace('_', ' ')}"


def short_test(target: Target) -> str:
    """For table headers: "test acc"."""
    return f"test {target.metric.replace('_', ' ')}"


def direction(target: Target) -> str:
    """ "higher is better" or "lower is better" """
    return f"{'higher' if target.mode == 'max' else 'lower'} is better"


def best_word(target: Target) -> str:
    """ "highest" or "lowest": the adjective of the better mean."""
    return "highest" if target.mode == "max" else "lowest"


def axis_label(target: Target, prefix: str) -> str:
    """An axis label with the metric and its direction, e.g. "best validation accuracy (higher is
    better)"."""
    return f"{prefix} {val_words(target)} ({direction(target)})"


def decimals(values: Iterable[float]) -> int:
    """Decimals to show a set of metric values with one precision: DIGITS below the leading power
    of ten of the largest magnitude (0.953, 23.4, 0.00312, 2905); 3 when there is no finite value."""
    finite = [abs(float(v)) for v in values if v is not None and math.isfinite(float(v)) and v != 0]
    if not finite:
        return DIGITS
    return max(0, DIGITS - math.ceil(math.log10(max(finite))))


def fmt(value: float, places: int) -> str:
    """`value` with `places` decimals ("n/a" for NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.{places}f}"
