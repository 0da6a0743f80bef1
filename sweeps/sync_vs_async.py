"""Synchronous data parallelism against an asynchronous parameter server, on the same task and budget.

    python sweeps/sync_vs_async.py            # local Ray, CPU, digits, 2 workers, a few minutes
    python sweeps/sync_vs_async.py --smoke    # the shortest version (tests)
    python sweeps/sync_vs_async.py --help

Four Tune trials, one at a time so that their timings do not disturb each other: mode sync (a Ray Train
TorchTrainer, DDP) and mode async-ps (trainables.param_server), each without and with an injected
straggler (the last worker sleeps --straggler-delay seconds before each of its steps). Every trial trains
the same task for the same epochs (every training example once per epoch) with the same optimizer and
hyperparameters. The report in <storage-path>/<name>/report/ (written by analysis/sync_vs_async.py)
compares the target metric against training time and against updates, throughput, time to
--target-value, the staleness distribution of the asynchronous runs, and what the straggler costs each
mode: runs.csv (one row per trial), curves.csv (one row per trial and epoch), report.md, and
target_vs_time.png, target_vs_updates.png, staleness.png.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optsweep import vocabulary as v
from optsweep.analysis import sync_vs_async as report
from optsweep.sweeps.spec import DEFAULT_STORAGE
from optsweep.trainables import checkpoints, param_server
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.tasks import build_task

MODES = ("sync", "async-ps")


@dataclass(frozen=True)
class Settings:
    name: str = "sync_vs_async"
    task: str = "digits"
    workers: int = 2
    epochs: int = 10
    optimizer: str = "adam"
    lr: float = 3e-3
    straggler_delay: float = 0.02
    target_value: float = 0.9
    seed: int = 0
    storage_path: str = DEFAULT_STORAGE
    cpus_per_worker: float = 0.5
    address: str | None = None


SMOKE = {"epochs": 2, "name": "sync_vs_async-smoke"}


def parse(argv: list[str] | None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python sweeps/sync_vs_async.py", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--name", default=d.name, help=f"experiment name (default: {d.name})")
    p.add_argument("--task", default=d.task, help=f"task name or import path (default: {d.task})")
    p.add_argument("--workers", type=int, default=d.workers, help=f"workers per trial (default: {d.workers})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per trial (default: {d.epochs})")
    p.add_argument("--optimizer", default=d.optimizer, help=f"optimizer (default: {d.optimizer})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default: {d.lr:g})")
    p.add_argument(
        "--straggler-delay",
        type=float,
        default=d.straggler_delay,
        help=f"seconds the slow worker sleeps before each step (default: {d.straggler_delay:g})",
    )
    p.add_argument(
        "--target-value",
        type=float,
        default=d.target_value,
        help=f"time and updates to reach this target metric value are reported (default: {d.target_value:g})",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--storage-path", default=d.storage_path, help=f"results root (default: ./{d.storage_path})"
    )
    p.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    p.add_argument("--address", help="join an existing Ray cluster ('auto'); default: a local Ray")
    p.add_argument("--smoke", action="store_true", help="the shortest run (2 epochs)")
    ns = p.parse_args(argv)
    values = {k: val for k, val in vars(ns).items() if k != "smoke"}
    if ns.smoke:
        values.update(SMOKE)
    settings = Settings(**values)
    if settings.workers < 1:
        p.error(f"--workers {settings.workers} is invalid: it must be an integer >= 1")
    if settings.epochs < 1:
        p.error(f"--epochs {settings.epochs} is invalid: it must be an integer >= 1")
    if not settings.straggler_delay > 0:
        p.error(f"--straggler-delay {settings.straggler_delay:g} is invalid: it must be > 0")
    for mode in MODES:  # bad optimizer, lr, task settings: one line before Ray starts
        try:
            TrainConfig.from_trial_config(_trial_config(settings, mode, 0.0))
        except ValueError as error:
            p.error(str(error))
    return settings


def _trial_config(settings: Settings, mode: str, delay: float) -> dict[str, Any]:
    return {
        "optimizer": settings.optimizer,
        "lr": settings.lr,
        "seed": settings.seed,
        "schedule": "constant",
        "settings": {
            "task": settings.task,
            "max_epochs": settings.epochs,
            "workers": settings.workers,
            "cpus_per_worker": settings.cpus_per_worker,
            "mode": mode,
            v.STRAGGLER_DELAY_S: delay,
        },
    }


def run(settings: Settings) -> Path:
    """Run the four trials and write the report; returns the report directory."""
    import ray
    from ray import tune

    from optsweep.trainables.trial import run_trial, trial_resources

    experiment = Path(os.path.abspath(settings.storage_path)) / settings.name
    if not ray.is_initialized():
        ray.init(
            address=settings.address, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    runs = [(mode, delay) for delay in (0.0, settings.straggler_delay) for mode in MODES]
    rows: list[pd.DataFrame] = []
    staleness: dict[str, list[int]] = {}
    for mode, delay in runs:
        label = _label(mode, delay)
        config = _trial_config(settings, mode, delay)
        print(f"{label}: training {settings.epochs} epochs with {settings.workers} workers ...", flush=True)
        tuner = tune.Tuner(
            tune.with_resources(run_trial, trial_resources(TrainConfig.from_trial_config(config))),
            param_space=config,
            tune_config=tune.TuneConfig(metric=build_task(settings.task).target.key, mode="max"),
            run_config=tune.RunConfig(storage_path=str(experiment), name=label, verbose=0),
        )
        result = tuner.fit()[0]
        if result.error is not None:
            raise RuntimeError(f"{label} failed: {result.error}")
        curve = pd.DataFrame(_result_rows(result))
        curve.insert(0, v.RUN_COLUMN, label)
        curve.insert(1, v.MODE_COLUMN, mode)
        curve.insert(2, v.STRAGGLER_DELAY_S, delay)
        rows.append(curve)
        if mode == "async-ps" and result.checkpoint is not None:
            with result.checkpoint.as_directory() as directory:
                state, _ = checkpoints.load(directory, 0)
            staleness[label] = [int(c) for c in state[v.STALENESS_COUNTS].tolist()]
    report_dir = experiment / "report"
    curves = pd.concat(rows, ignore_index=True)
    text = report.write_report(report_dir, curves, staleness, comparison(settings))
    print("\n".join(text.splitlines()[4:]), flush=True)  # from the runs table on
    print(f"Report: {report_dir}", flush=True)
    return report_dir


def comparison(settings: Settings) -> report.Comparison:
    """What the report describes: the settings, the task's target, each mode's updates per epoch."""
    return report.Comparison(
        task=settings.task,
        workers=settings.workers,
        epochs=settings.epochs,
        optimizer=settings.optimizer,
        lr=settings.lr,
        seed=settings.seed,
        straggler_delay=settings.straggler_delay,
        target_value=settings.target_value,
        target=build_task(settings.task).target,
        updates_per_epoch={mode: updates_per_epoch(settings, mode) for mode in MODES},
    )


def _result_rows(result: Any) -> list[dict[str, Any]]:
    """Every epoch's reported metrics (result.json: all keys, unlike progress.csv's first-row columns)."""
    import json

    path = Path(result.path) / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _label(mode: str, delay: float) -> str:
    return f"{mode}-straggler" if delay else mode


def updates_per_epoch(settings: Settings, mode: str) -> int:
    """Optimizer updates per epoch: one per synchronous step; one per gradient for the server."""
    task = build_task(settings.task)
    train = len(task.data().train)  # type: ignore[arg-type]
    if mode == "async-ps":
        return param_server.updates_per_epoch(train, task.batch_size, settings.workers)
    return math.ceil(math.ceil(train / settings.workers) / task.batch_size)


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
