"""Trials on a real local Ray: the single-worker fast path inside Tune, and 2-worker DDP runs on Ray
Train that learn, and that survive a killed worker with the same final metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray import tune

from optsweep.trainables import faults
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.trial import run_trial, trial_resources

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

TRAINING_METRICS = ("epoch", "train_loss", "val_loss", "val_acc", "best_val_acc", "lr", "test_acc")


def _trial_config(workers: int, **settings: Any) -> dict[str, Any]:
    return {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "seed": 1,
        "schedule": "cosine",
        "settings": {
            "max_epochs": 4,
            "workers": workers,
            "cpus_per_worker": 1.0 if workers == 1 else 0.5,
            **settings,
        },
    }


def _run(storage: Path, name: str, config: dict[str, Any]) -> tune.ResultGrid:
    resources = trial_resources(TrainConfig.from_trial_config(config))
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space=config,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            name=name,
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner.fit()


@pytest.mark.timeout(180)
def test_single_worker_fast_path_learns_digits(tmp_path: Path) -> None:
    result = _run(tmp_path, "fast", _trial_config(workers=1))[0]
    assert result.error is None
    assert result.metrics["epoch"] == 4
    assert result.metrics["val_acc"] > 0.85
    assert result.checkpoint is not None
    assert "train_runs" not in {p.name for p in (tmp_path / "fast").iterdir()}  # no TorchTrainer involved


@pytest.mark.timeout(400)
def test_two_worker_run_learns_and_survives_a_killed_worker(tmp_path: Path, fault_dir: Path) -> None:
    straight = _run(tmp_path, "ddp", _trial_config(workers=2))[0]
    assert straight.error is None
    assert straight.metrics["val_acc"] > 0.85
    train_runs = tmp_path / "ddp" / "train_runs"
    assert train_runs.is_dir() and any(train_runs.iterdir())  # it really went through Ray Train

    marker = faults.crash_marker(fault_dir, rank=1, epoch=3)
    marker.touch()
    faulted = _run(tmp_path, "ddp_fault", _trial_config(workers=2))[0]
    assert not marker.exists() and marker.with_name(marker.name + ".fired").exists()  # the fault fired
    assert faulted.error is None
    # Restarted from the epoch-2 checkpoint, it ends exactly where the uninterrupted run ended.
    for key in TRAINING_METRICS:
        assert faulted.metrics[key] == straight.metrics[key], key
    epochs = [row["epoch"] for row in faulted.metrics_dataframe.to_dict("records")]
    assert epochs == [1, 2, 3, 4]
