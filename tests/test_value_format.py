"""How the report writes a hyperparameter value: three significant figures, and more only where three would
round a value onto 0 or 1 (issue 21: `lr=2e-04` was printed for 0.000205)."""

from __future__ import annotations

import pytest

from optsweep.analysis.binning import format_value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000205, "0.000205"),
        (2.05e-5, "2.05e-05"),
        (1e-5, "1e-05"),
        (0.003, "0.003"),
        (0.1, "0.1"),
        (0.9, "0.9"),
        (0.9995, "0.9995"),
        (0.99999, "0.99999"),
        (1.0, "1"),
        (0.0, "0"),
        (12345.0, "1.23e+04"),
        (True, "True"),
        ("cosine", "cosine"),
    ],
)
def test_values_keep_what_tells_them_apart(value: object, text: str) -> None:
    assert format_value(value) == text  # type: ignore[arg-type]
