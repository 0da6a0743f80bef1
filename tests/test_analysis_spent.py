"""The budget each optimizer spent and the configurations per rung (issue 12), from a trials table and the
early-stopping record, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from optsweep.analysis import spent


def _trials(rows: list[tuple[str, str, int, float]], **settings: float) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["optimizer", "config_id", "epochs", "time_s"])
    for key, value in settings.items():
        frame[key] = value
    return frame


def test_spent_sums_epochs_time_and_device_time() -> None:
    trials = _trials(
        [("adam", "a1", 8, 2.0), ("adam", "a2", 2, 0.5), ("sgd", "s1", 8, 1.0), ("sgd", "s2", 2, 0.25)],
        workers=2,
        cpus_per_worker=1.5,
        gpus_per_worker=0.5,
    )
    table = spent.spent(trials).set_index("optimizer")
    assert table.loc["adam"].to_dict() == {
        "trials": 2,
        "trial_epochs": 10,
        "search_trial_epochs": 10,  # no stage column: all search
        "confirm_trial_epochs": 0,
        "wall_time_s": 2.5,
        "cpu_s": 2.5 * 2 * 1.5,
        "gpu_s": 2.5 * 2 * 0.5,
    }
    notes = spent.imbalances(table.reset_index())
    assert notes == [
        "adam spent 33% more trial wall time than the optimizers' mean (2.5 vs 1.9)",
        "sgd spent 33% less trial wall time than the optimizers' mean (1.2 vs 1.9)",
        "adam spent 33% more GPU time than the optimizers' mean (2.5 vs 1.9)",
        "sgd spent 33% less GPU time than the optimizers' mean (1.2 vs 1.9)",
    ]


def test_a_budget_within_five_percent_is_not_flagged() -> None:
    trials = _trials([("adam", "a1", 100, 1.0), ("sgd", "s1", 104, 1.04)])
    assert spent.imbalances(spent.spent(trials)) == []
    trials = _trials([("adam", "a1", 100, 1.0), ("sgd", "s1", 112, 1.0)])
    assert spent.imbalances(spent.spent(trials)) == [
        "adam spent 6% less trial-epochs than the optimizers' mean (100.0 vs 106.0)",
        "sgd spent 6% more trial-epochs than the optimizers' mean (112.0 vs 106.0)",
    ]


@pytest.mark.parametrize("where", [".", "adam"], ids=["the study's record", "an older study's per optimizer"])
def test_rungs_come_from_the_halving_record_or_else_from_the_epochs(tmp_path: Path, where: str) -> None:
    (tmp_path / where).mkdir(exist_ok=True)
    record = {"decisions": [["adam", 2, [0, 1, 2, 3, 4, 5], [1, 4]], ["adam", 6, [1, 4], [4]]]}
    (tmp_path / where / spent.HALVING_STATE_FILE).write_text(json.dumps(record))
    sgd = [("sgd", "s1", 2, 1.0), ("sgd", "s1", 2, 1.0), ("sgd", "s2", 6, 1.0), ("sgd", "s3", 20, 1.0)]
    trials = _trials([("adam", "a1", 2, 1.0), *sgd, ("sgd", "s3", 20, 1.0)])
    table = spent.rungs_reached(tmp_path, trials)
    assert table.values.tolist() == [
        ["adam", 2, 6, 2],
        ["adam", 6, 2, 1],
        ["sgd", 2, 3, 2],
        ["sgd", 6, 2, 1],
    ]


@pytest.mark.parametrize("content", ["{", '{"decisions": 3}'])
def test_a_damaged_halving_record_falls_back_to_the_epochs(tmp_path: Path, content: str) -> None:
    (tmp_path / "adam").mkdir()
    (tmp_path / "adam" / spent.HALVING_STATE_FILE).write_text(content)
    trials = _trials([("adam", "a1", 2, 1.0), ("adam", "a2", 4, 1.0)])
    assert spent.rungs_reached(tmp_path, trials).values.tolist() == [["adam", 2, 2, 1]]
