"""analysis.load / analysis.curves against hand-made Tune-shaped experiment directories."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import ADAM, SGD, FakeTrial, rising, standard_experiment, write_experiment

from optsweep import analysis
from optsweep.analysis.loading import classify

HEAD = ["trial_id", "optimizer", "seed", "lr", "weight_decay", "schedule"]
OTHER_HPARAMS = ["beta1", "beta2", "eps", "momentum", "nesterov"]
METRICS = [
    "status",
    "epochs",
    "best_val_acc",
    "best_epoch",
    "final_val_acc",
    "final_train_loss",
    "test_acc",
    "time_s",
]
METRICS += ["node_id"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_experiment(tmp_path_factory.mktemp("standard") / "exp")


@pytest.fixture(scope="module")
def trials(experiment: Path) -> pd.DataFrame:
    return analysis.load(experiment)


def _row(trials: pd.DataFrame, optimizer: str, seed: int, **hparams: float) -> pd.Series:
    mask = (trials["optimizer"] == optimizer) & (trials["seed"] == seed)
    for key, value in hparams.items():
        mask &= trials[key] == value
    rows = trials[mask]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_columns_follow_the_contract_order(trials: pd.DataFrame) -> None:
    expected = [*HEAD, *OTHER_HPARAMS, *METRICS]
    assert list(trials.columns[: len(expected)]) == expected
    assert {"config_id", "dataset", "model", "max_epochs", "batch_size"} <= set(trials.columns)
    assert "__trial_index__" not in trials.columns


def test_every_planned_trial_is_listed_once_with_its_status(trials: pd.DataFrame) -> None:
    assert len(trials) == 27 and trials["trial_id"].is_unique
    counts = trials.groupby(["optimizer", "status"]).size().to_dict()
    assert counts == {
        ("adam", "completed"): 12,
        ("adam", "stopped_early"): 1,
        ("adam", "diverged"): 1,
        ("adam", "error"): 1,
        ("sgd", "completed"): 7,
        ("sgd", "diverged"): 3,
        ("sgd", "incomplete"): 2,
    }


def test_metrics_of_a_completed_trial(trials: pd.DataFrame) -> None:
    row = _row(trials, "adam", 1, lr=1e-3, weight_decay=0.0)
    assert row["status"] == "completed" and row["epochs"] == 5
    assert row["best_val_acc"] == pytest.approx(0.96)
    assert row["final_val_acc"] == pytest.approx(0.96)
    assert row["final_train_loss"] == pytest.approx(1.05 - 0.96)
    assert row["test_acc"] == pytest.approx(0.94)
    assert row["time_s"] == pytest.approx(2.5)
    assert row["node_id"] == "node-a" and row["dataset"] == "digits" and row["max_epochs"] == 5


def test_diverged_trial_ignores_the_sentinel_line(trials: pd.DataFrame) -> None:
    row = _row(trials, "adam", 0, lr=0.1)
    assert row["status"] == "diverged" and row["epochs"] == 3
    assert row["best_val_acc"] == pytest.approx(0.99)  # the epochs before it diverged
    assert row[["final_val_acc", "final_train_loss", "test_acc"]].isna().all()
    never_clean = _row(trials, "sgd", 0, lr=1.0)
    assert never_clean["status"] == "diverged" and math.isnan(never_clean["best_val_acc"])


def test_stopped_error_and_half_finished_trials(trials: pd.DataFrame) -> None:
    stopped = _row(trials, "adam", 0, lr=1e-3, weight_decay=1e-4)
    assert stopped["status"] == "stopped_early" and stopped["epochs"] == 2
    assert stopped["test_acc"] == pytest.approx(0.85 - 0.01)  # the loop tests every epoch: its last one
    errored = _row(trials, "adam", 0, lr=1e-2, weight_decay=1e-4)
    assert errored["status"] == "error" and "CUDA out of memory" in errored["error_message"]
    pending = _row(trials, "sgd", 1, lr=0.3)
    assert pending["status"] == "incomplete" and pending["epochs"] == 0 and pd.isna(pending["trial_dir"])
    running = _row(trials, "sgd", 2, lr=0.3)
    assert running["status"] == "incomplete"
    # Its third line, cut in half in result.json by the crash, is whole in progress.csv.
    assert running["epochs"] == 3
    assert running["best_val_acc"] == pytest.approx(0.7)


def test_seeds_of_one_configuration_share_a_config_id(trials: pd.DataFrame) -> None:
    per_config = trials.groupby("config_id")["seed"].apply(sorted)
    assert all(seeds == [0, 1, 2] for seeds in per_config)
    assert trials.groupby("optimizer")["config_id"].nunique().to_dict() == {"adam": 5, "sgd": 4}


def test_curves_are_long_and_hide_sentinels(experiment: Path, trials: pd.DataFrame) -> None:
    curves = analysis.curves(experiment)
    started = trials[trials["epochs"] > 0]
    assert len(curves) == started["epochs"].sum()
    last_epochs = curves.groupby("trial_id")["epoch"].max().to_dict()
    assert last_epochs == started.set_index("trial_id")["epochs"].to_dict()
    diverged_lines = curves[curves["diverged"]]
    assert len(diverged_lines) == 4
    assert diverged_lines[["val_acc", "train_loss", "val_loss", "test_acc"]].isna().all().all()
    assert (curves.loc[~curves["diverged"], "val_acc"] <= 1.0).all()
    best = curves[curves["trial_id"] == _row(trials, "sgd", 2, lr=0.1)["trial_id"]]
    np.testing.assert_allclose(best["val_acc"], rising(0.95))
    assert (best["epoch_lr"] == 0.1).all() and list(best["epoch"]) == [1, 2, 3, 4, 5]


def test_missing_state_falls_back_to_trial_directories(tmp_path: Path) -> None:
    root = standard_experiment(tmp_path / "exp", state="missing")
    trials = analysis.load(root)
    assert len(trials) == 26  # the pending trial had no directory, so it cannot be known
    assert (trials["tune_status"].isna()).all()
    statuses = trials.groupby("status").size().to_dict()
    # Without Tune's status, error.txt marks the error, done=true a scheduler stop.
    assert statuses == {"completed": 19, "stopped_early": 1, "diverged": 4, "error": 1, "incomplete": 1}


def test_corrupt_state_warns_and_falls_back(tmp_path: Path) -> None:
    root = standard_experiment(tmp_path / "exp", state="corrupt")
    with pytest.warns(UserWarning, match="unreadable experiment state"):
        trials = analysis.load(root)
    assert len(trials) == 26


def test_newest_state_file_wins(tmp_path: Path) -> None:
    trial = FakeTrial("adam", 0, ADAM, rising(0.9), tune_status="RUNNING")
    root = write_experiment(tmp_path / "exp", [trial])
    state_file = next((root / "adam").glob("experiment_state-*.json"))
    newer = state_file.with_name("experiment_state-2026-11-23_00-00-00.json")
    newer.write_text(state_file.read_text().replace('\\"RUNNING\\"', '\\"TERMINATED\\"'))
    os.utime(state_file, (1_000_000, 1_000_000))
    assert analysis.load(root)["tune_status"].tolist() == ["TERMINATED"]


def test_a_retried_trial_that_finished_is_not_an_error(tmp_path: Path) -> None:
    trial = FakeTrial("sgd", 0, SGD, rising(0.9), tune_status="TERMINATED", error=True)
    trials = analysis.load(write_experiment(tmp_path / "exp", [trial]))
    assert trials["status"].tolist() == ["completed"]
    assert "CUDA" in trials["error_message"].iloc[0]


def test_trials_missing_from_a_stale_state_are_still_found(tmp_path: Path) -> None:
    root = write_experiment(tmp_path / "exp", [FakeTrial("sgd", s, SGD, rising(0.9)) for s in range(2)])
    state_file = next((root / "sgd").glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    state["trial_data"] = state["trial_data"][:1]
    state_file.write_text(json.dumps(state))
    trials = analysis.load(root)
    assert len(trials) == 2 and trials["status"].tolist() == ["completed", "completed"]


def test_an_earlier_run_of_a_trial_the_resumed_sweep_created_again_is_not_a_second_trial(
    tmp_path: Path,
) -> None:
    """A killed driver's trial started after its last snapshot leaves a directory the state does not name;
    the resumed sweep creates the same trial again (the same optimizer, configuration and seed), under a new
    id when its searcher does not number trials. The earlier run is not a trial of its own."""
    configured = {**SGD, "__configuration": 0}
    root = write_experiment(
        tmp_path / "exp", [FakeTrial("sgd", s, configured, rising(0.9)) for s in range(2)]
    )
    tune_dir = root / "sgd"
    state = json.loads(next(tune_dir.glob("experiment_state-*.json")).read_text())
    trial_id = json.loads(state["trial_data"][1][0])["trial_id"]
    [second] = [d for d in tune_dir.iterdir() if trial_id in d.name]
    earlier = tune_dir / second.name.replace(trial_id, "0badcafe")
    shutil.copytree(second, earlier)
    for path in earlier.iterdir():
        path.write_text(path.read_text().replace(trial_id, "0badcafe"))
    assert len(analysis.load(root)) == 2
    # Without a trial that trains the same, the directory is a trial of its own (a snapshot that lags).
    (earlier / "params.json").write_text(
        (earlier / "params.json").read_text().replace('"seed": 1', '"seed": 7')
    )
    assert sorted(analysis.load(root)["seed"]) == [0, 1, 7]


def test_report_dir_and_nested_trial_output_are_not_experiments(tmp_path: Path) -> None:
    root = standard_experiment(tmp_path / "exp")
    shutil.copytree(root / "sgd", root / "report" / "sgd")  # e.g. a user's copy inside report/
    assert len(analysis.load(root)) == 27


def test_a_single_tune_experiment_directory_also_loads(experiment: Path) -> None:
    assert set(analysis.load(experiment / "adam")["optimizer"]) == {"adam"}


def test_missing_and_non_experiment_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        analysis.load(tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(analysis.NotAnExperimentError):
        analysis.load(tmp_path / "empty")


@pytest.mark.parametrize(
    ("tune_status", "error_file", "diverged", "reached_end", "done", "expected"),
    [
        ("ERROR", False, False, False, False, "error"),
        ("ERROR", True, True, False, True, "error"),
        ("TERMINATED", False, True, False, True, "diverged"),
        ("TERMINATED", False, False, True, True, "completed"),
        ("TERMINATED", False, False, False, True, "stopped_early"),
        ("TERMINATED", True, False, True, True, "completed"),  # failed once, retried, finished
        ("RUNNING", False, False, False, False, "incomplete"),
        ("RUNNING", True, False, False, False, "incomplete"),  # being retried
        ("PENDING", False, False, False, False, "incomplete"),
        ("PAUSED", False, False, False, False, "incomplete"),
        ("RUNNING", False, False, True, False, "completed"),  # state saved before the last epoch landed
        (None, True, False, False, False, "error"),
        (None, False, False, False, True, "stopped_early"),
        (None, False, False, False, False, "incomplete"),
        (None, False, True, False, True, "diverged"),
    ],
)
def test_classify(
    tune_status: str | None, error_file: bool, diverged: bool, reached_end: bool, done: bool, expected: str
) -> None:
    assert classify(tune_status, error_file, diverged, reached_end, done) == expected


def test_epochs_repeated_after_a_restore_keep_the_later_line(tmp_path: Path) -> None:
    root = write_experiment(tmp_path / "exp", [FakeTrial("sgd", 0, SGD, [0.5, 0.6, 0.7, 0.8, 0.9])])
    result_file = next((root / "sgd").glob("*/result.json"))
    lines = [json.loads(line) for line in result_file.read_text().splitlines()]
    # The first attempt reached epoch 3 with a lucky 0.95, crashed, and resumed from epoch 2.
    first_attempt = [lines[0], lines[1], {**lines[2], "val_acc": 0.95}]
    result_file.write_text("".join(json.dumps(line) + "\n" for line in first_attempt + lines[2:]))
    trials = analysis.load(root)
    assert trials["epochs"].tolist() == [5] and trials["best_val_acc"].tolist() == [0.9]
    curves = analysis.curves(root)
    assert curves["epoch"].tolist() == [1, 2, 3, 4, 5] and curves["val_acc"].iloc[2] == 0.7
