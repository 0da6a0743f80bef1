"""The progress line: counts by status, best so far, and no repeated lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from sweeps.progress import ProgressLine


@dataclass
class _Trial:
    status: str
    last_result: dict[str, Any] = field(default_factory=dict)


def test_counts_and_best(capsys: pytest.CaptureFixture[str]) -> None:
    trials = [
        _Trial("TERMINATED", {"best_val_acc": 0.91}),
        _Trial("TERMINATED", {"best_val_acc": 0.2, "diverged": True}),
        _Trial("ERROR", {"best_val_acc": 0.5}),
        _Trial("RUNNING", {"best_val_acc": 0.95}),
        _Trial("PENDING"),
    ]
    ProgressLine("adam", total=8).on_experiment_end(trials)
    assert capsys.readouterr().out.strip() == (
        "[adam] 3/8 trials done, 1 running, 4 pending, 1 diverged, 1 errors, best val_acc so far 0.9500"
    )


def test_unchanged_state_is_not_printed_again(capsys: pytest.CaptureFixture[str]) -> None:
    progress = ProgressLine("sgd", total=2, interval_s=0.0)
    trials = [_Trial("RUNNING"), _Trial("PENDING")]
    for _ in range(5):
        progress.on_step_end(0, trials)
    trials[0].status = "TERMINATED"
    progress.on_step_end(0, trials)
    assert capsys.readouterr().out.splitlines() == [
        "[sgd] 0/2 trials done, 1 running, 1 pending",
        "[sgd] 1/2 trials done, 0 running, 1 pending",
    ]
