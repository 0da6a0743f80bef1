"""The protocol through real Ray sweeps (issue 12): early stopping decided per configuration, the same
trials table from two identical runs, a killed-and-resumed sweep stopping exactly what an uninterrupted
one stops, and Optuna under early stopping seeing whole configurations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from optsweep.sweeps import adam_vs_sgd
from optsweep.sweeps.early_stopping.halving import STATE_FILE

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

# 6 configurations x 2 seeds per optimizer, 8 epochs: rungs at epochs 1 and 3 (keeping 2, then 1).
# An LR range in which nothing diverges on digits, so that every configuration keeps both its seeds.
ARGV = ["--smoke", "--num-samples", "6", "--seeds", "2", "--max-epochs", "8", "--scheduler", "asha"]
ARGV += ["--lr-max", "0.05"]
RUN_DEPENDENT = ["trial_id", "time_s", "node_id", "trial_dir", "tune_status", "error_message", "data_dir"]


def _trials(experiment: Path) -> pd.DataFrame:
    trials = pd.read_csv(experiment / "report" / "trials.csv")
    comparable = trials.drop(columns=[c for c in RUN_DEPENDENT if c in trials.columns])
    return comparable.sort_values(["optimizer", "config_id", "seed"], ignore_index=True)


def _per_configuration(trials: pd.DataFrame) -> pd.DataFrame:
    return trials.groupby(["optimizer", "config_id"]).agg(
        epochs=("epochs", "nunique"), max_epochs=("epochs", "max"), statuses=("status", "nunique")
    )


@pytest.fixture(scope="module")
def two_runs(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    storage = tmp_path_factory.mktemp("protocol")
    argv = [*ARGV, "--optimizers", "sgd,adam", "--storage-path", str(storage)]
    assert adam_vs_sgd.main([*argv, "--name", "first"]) == 0
    assert adam_vs_sgd.main([*argv, "--name", "second"]) == 0
    return storage / "first", storage / "second"


@pytest.mark.timeout(900)
def test_every_seed_of_a_configuration_stops_together_and_the_best_trained_the_full_budget(
    two_runs: tuple[Path, Path],
) -> None:
    first, _ = two_runs
    trials = _trials(first)
    assert "diverged" not in set(trials["status"])
    per_configuration = _per_configuration(trials)
    assert (per_configuration["epochs"] == 1).all(), per_configuration  # seeds never end apart
    summary = pd.read_csv(first / "report" / "summary.csv")
    for row in summary.itertuples():
        best = trials[(trials["optimizer"] == row.optimizer) & (trials["config_id"] == row.config_id)]
        assert len(best) == 2 and (best["epochs"] == 8).all(), best
    # Exactly as many configurations went on as the rule says: 6 judged at epoch 1, 2 on; 2 at 3, 1 on.
    for optimizer, group in per_configuration.groupby(level="optimizer"):
        assert sorted(group["max_epochs"]) == [1, 1, 1, 1, 3, 8], optimizer
    report = (first / "report" / "report.md").read_text()
    assert "| sgd | 1 | 6 | 2 |" in report and "| sgd | 3 | 2 | 1 |" in report
    assert "## Budget spent" in report and "trial-epochs" in report


@pytest.mark.timeout(900)
def test_the_same_command_gives_the_same_trials_table(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    pd.testing.assert_frame_equal(_trials(first), _trials(second))
    decisions = [json.loads((run / STATE_FILE).read_text())["decisions"] for run in two_runs]
    assert decisions[0] == decisions[1]


@pytest.mark.timeout(900)
def test_a_killed_and_resumed_sweep_stops_exactly_what_an_uninterrupted_one_stops(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    import ray

    argv = [*ARGV, "--optimizers", "sgd,adam", "--storage-path", str(tmp_path), "--name", "first"]
    experiment = tmp_path / "first"
    driver = subprocess.Popen(
        [sys.executable, adam_vs_sgd.__file__, *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = experiment / STATE_FILE
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:  # kill it once a rung is decided
        if state.exists() and json.loads(state.read_text() or "{}").get("decisions"):
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the sweep ended before its first rung decision"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    assert adam_vs_sgd.main(argv) == 0
    pd.testing.assert_frame_equal(_trials(experiment), _trials(two_runs[0]))


@pytest.mark.timeout(900)
def test_optuna_under_early_stopping_judges_whole_configurations(tmp_path: Path) -> None:
    argv = [*ARGV, "--optimizers", "adam", "--search", "optuna", "--storage-path", str(tmp_path)]
    assert adam_vs_sgd.main([*argv, "--name", "tpe"]) == 0
    trials = pd.read_csv(tmp_path / "tpe" / "report" / "trials.csv")
    assert len(trials) == 12 and trials["config_id"].nunique() == 6
    per_configuration = _per_configuration(trials)
    assert (per_configuration["epochs"] == 1).all() and (per_configuration["statuses"] == 1).all()
    assert sorted(per_configuration["max_epochs"]) == [1, 1, 1, 1, 3, 8]
