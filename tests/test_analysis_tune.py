"""analysis.load reads what a real Ray Tune run writes (ASHA stops, errors, divergence)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from optsweep import analysis

ray = pytest.importorskip("ray")
MAX_EPOCHS = 4
CRASH_LR, DIVERGE_LR = 4.0, 10.0


def _make_trainable() -> Callable[[dict[str, Any]], None]:
    # Built inside a function so that cloudpickle ships it by value: Ray's workers cannot import tests/.
    def trainable(config: dict[str, Any]) -> None:
        from ray import tune

        lr, seed = config["lr"], config["seed"]
        if lr == CRASH_LR:
            raise RuntimeError("simulated crash in the training loop")
        for epoch in range(1, config["settings"]["max_epochs"] + 1):
            line = {"epoch": epoch, "lr": lr, "epoch_time_s": 0.01, "samples_per_s": 1000.0, "node_id": "n0"}
            if lr == DIVERGE_LR and epoch == 2:
                tune.report(
                    {
                        **line,
                        "train_loss": 1e9,
                        "val_loss": 1e9,
                        "val_acc": 0.0,
                        "diverged": True,
                        "test_acc": 0.0,
                    }
                )
                return
            quality = 0.95 if lr == DIVERGE_LR else (0.9 if lr < 1.0 and lr >= 1e-3 else 0.3)
            val_acc = quality * epoch / MAX_EPOCHS + 0.01 * seed
            line.update(
                {
                    "train_loss": 1.0 - val_acc,
                    "val_loss": 1.1 - val_acc,
                    "val_acc": val_acc,
                    "diverged": False,
                }
            )
            if epoch == config["settings"]["max_epochs"]:
                line["test_acc"] = val_acc - 0.02
            tune.report(line)

    return trainable


def _run_sweep(
    storage: Path, optimizer: str, lrs: list[float], seeds: list[int], extra: dict[str, Any]
) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    space = {
        "optimizer": optimizer,
        "seed": tune.grid_search(seeds),
        "lr": tune.grid_search(lrs),
        "weight_decay": 0.0,
        "schedule": "constant",
        **extra,
        "settings": {"dataset": "toy", "model": "none", "max_epochs": MAX_EPOCHS},
    }
    tuner = tune.Tuner(
        _make_trainable(),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            # Sequential trials make ASHA's decisions deterministic: later, worse trials are cut.
            scheduler=ASHAScheduler(
                time_attr="training_iteration", max_t=MAX_EPOCHS, grace_period=1, reduction_factor=2
            ),
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=optimizer,
            storage_path=str(storage),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    tuner.fit()


@pytest.fixture(scope="module")
def tune_experiment(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    storage = tmp_path_factory.mktemp("tune") / "exp"
    # sgd: a good lr first, then one ASHA stops, one that crashes and one that diverges.
    sgd_lrs = [0.1, 0.0001, CRASH_LR, DIVERGE_LR]
    _run_sweep(storage, "sgd", sgd_lrs, [0], {"momentum": 0.9, "nesterov": True})
    _run_sweep(storage, "adam", [0.01], [0, 1], {"beta1": 0.9, "beta2": 0.999})
    return storage


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_load_reads_a_real_tune_experiment(tune_experiment: Path) -> None:
    trials = analysis.load(tune_experiment).set_index(["optimizer", "lr", "seed"])
    assert len(trials) == 6
    sgd = trials.loc["sgd"].droplevel("seed")
    completed = sgd.loc[0.1]
    assert [completed["status"], completed["tune_status"], completed["epochs"]] == [
        "completed",
        "TERMINATED",
        MAX_EPOCHS,
    ]
    assert sgd.loc[0.1, "test_acc"] == pytest.approx(0.9 - 0.02)
    stopped = sgd.loc[0.0001]
    assert stopped["status"] == "stopped_early" and stopped["tune_status"] == "TERMINATED"
    assert stopped["epochs"] < MAX_EPOCHS
    crashed = sgd.loc[CRASH_LR]
    assert crashed["status"] == "error" and crashed["tune_status"] == "ERROR" and crashed["epochs"] == 0
    assert "simulated crash" in crashed["error_message"]
    diverged = sgd.loc[DIVERGE_LR]
    assert diverged["status"] == "diverged" and diverged["epochs"] == 2
    assert diverged["best_val_acc"] == pytest.approx(0.95 / MAX_EPOCHS)
    assert pd.isna(diverged["test_acc"])
    adam = trials.loc["adam"]
    assert (adam["status"] == "completed").all() and adam["config_id"].nunique() == 1
    assert (adam["time_s"] > 0).all() and (adam["max_epochs"] == MAX_EPOCHS).all()
    assert not trials["momentum"].loc["sgd"].isna().any() and trials["momentum"].loc["adam"].isna().all()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_report_from_a_real_tune_experiment(tune_experiment: Path) -> None:
    curves = analysis.curves(tune_experiment)
    assert curves[curves["diverged"]]["val_acc"].isna().all()
    report = analysis.write_report(tune_experiment)
    summary = pd.read_csv(report / "summary.csv").set_index("optimizer")
    assert summary.loc["adam", "n_seeds"] == 2 and summary.loc["sgd", "n_seeds"] == 1
    assert summary.loc["sgd", "lr"] == 0.1
    # adam (2 seeds) is ahead of sgd (1 seed): with one seed the report must not claim a winner.
    assert "no evidence that adam is better" in (report / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_load_reads_the_state_tune_restores_not_the_newest_file(
    tune_experiment: Path, tmp_path: Path
) -> None:
    """On resume Tune rewrites the older session's experiment_state a moment after writing its own; the
    report must read the file Tune restores (the greatest name), not the newest by mtime."""
    import json
    import os
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(tune_experiment, copy, ignore=shutil.ignore_patterns("report"))
    [state_file] = (copy / "sgd").glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    stale = []
    for trial_json, runtime_json in state["trial_data"]:
        trial = json.loads(trial_json)
        trial["status"] = "RUNNING"  # the snapshot of the interrupted first session
        stale.append([json.dumps(trial), runtime_json])
    older = state_file.with_name("experiment_state-2000-01-01_00-00-00.json")
    older.write_text(json.dumps({**state, "trial_data": stale}))
    newer_mtime = state_file.stat().st_mtime + 60
    os.utime(older, (newer_mtime, newer_mtime))

    sgd = analysis.load(copy).set_index(["optimizer", "lr"]).loc["sgd"]
    assert sgd.loc[0.0001, "status"] == "stopped_early"
    assert sgd.loc[0.1, "status"] == "completed"
    assert "incomplete" not in set(sgd["status"])
