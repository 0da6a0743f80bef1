"""Synchronous data parallelism against an asynchronous parameter server, on the same task and budget.

    python sweeps/sync_vs_async.py            # local Ray, CPU, digits, 2 workers, a few minutes
    python sweeps/sync_vs_async.py --smoke    # the shortest version (tests)
    python sweeps/sync_vs_async.py --help

Four Tune trials, one at a time so that their timings do not disturb each other: mode sync (a Ray Train
TorchTrainer, DDP) and mode async-ps (trainables.param_server), each without and with an injected
straggler (the last worker sleeps --straggler-delay seconds before each of its steps). Every trial trains
the same task for the same epochs (every training example once per epoch) with the same optimizer and
hyperparameters. The report in <storage-path>/<name>/report/ compares the target metric against
training time and against updates, throughput, time to --target-value, the staleness distribution of the
asynchronous runs, and what the straggler costs each mode: runs.csv (one row per trial), curves.csv (one
row per trial and epoch), report.md, and target_vs_time.png, target_vs_updates.png, staleness.png.
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
from optsweep.trainables import checkpoints, param_server
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.tasks import build_task

from .spec import DEFAULT_STORAGE

MODES = ("sync", "async-ps")

TRAIN_TIME_S = "train_time_s"
"""Cumulative training time (the sum of the epochs' times: no start-up, no evaluation)."""


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
            "straggler_delay_s": delay,
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
        curve.insert(0, "run", label)
        curve.insert(1, "mode", mode)
        curve.insert(2, "straggler_delay_s", delay)
        rows.append(curve)
        if mode == "async-ps" and result.checkpoint is not None:
            with result.checkpoint.as_directory() as directory:
                state, _ = checkpoints.load(directory, 0)
            staleness[label] = [int(c) for c in state[param_server.STALENESS_COUNTS].tolist()]
    curves = pd.concat(rows, ignore_index=True)
    return write_report(experiment / "report", curves, staleness, settings)


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


def write_report(
    directory: Path, curves: pd.DataFrame, staleness: dict[str, list[int]], settings: Settings
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = build_task(settings.task).target
    directory.mkdir(parents=True, exist_ok=True)
    curves = curves.sort_values(["run", v.EPOCH]).copy()
    curves[TRAIN_TIME_S] = curves.groupby("run")[v.EPOCH_TIME_S].cumsum()
    if param_server.UPDATES not in curves:
        curves[param_server.UPDATES] = math.nan
    for mode in MODES:
        sync_rows = (curves["mode"] == mode) & curves[param_server.UPDATES].isna()
        curves.loc[sync_rows, param_server.UPDATES] = curves.loc[sync_rows, v.EPOCH] * updates_per_epoch(
            settings, mode
        )
    keep = ["run", "mode", "straggler_delay_s", v.EPOCH, param_server.UPDATES, TRAIN_TIME_S, v.EPOCH_TIME_S]
    keep += [v.SAMPLES_PER_S, v.TRAIN_LOSS, target.key, target.test_key]
    keep += [
        c
        for c in (param_server.STALENESS_MEAN, param_server.STALENESS_P90, param_server.STALENESS_MAX)
        if c in curves
    ]
    curves = curves[[c for c in keep if c in curves]]
    curves.to_csv(directory / "curves.csv", index=False)

    runs = []
    for label, curve in curves.groupby("run", sort=False):
        reached = (
            curve[curve[target.key] >= settings.target_value]
            if target.mode == "max"
            else curve[curve[target.key] <= settings.target_value]
        )
        counts = staleness.get(str(label), [])
        total = sum(counts)
        mean = sum(i * c for i, c in enumerate(counts)) / total if total else math.nan
        runs.append(
            {
                "run": label,
                "mode": curve["mode"].iloc[0],
                "straggler_delay_s": curve["straggler_delay_s"].iloc[0],
                "epochs": int(curve[v.EPOCH].max()),
                "updates": int(curve[param_server.UPDATES].max()),
                "train_time_s": float(curve[TRAIN_TIME_S].max()),
                "samples_per_s": float(
                    curve[v.SAMPLES_PER_S].iloc[1:].median()
                    if len(curve) > 1
                    else curve[v.SAMPLES_PER_S].iloc[0]
                ),
                f"final_{target.key}": float(curve[target.key].iloc[-1]),
                f"best_{target.key}": float(
                    curve[target.key].max() if target.mode == "max" else curve[target.key].min()
                ),
                f"time_to_{settings.target_value:g}_s": float(reached[TRAIN_TIME_S].iloc[0])
                if len(reached)
                else math.nan,
                f"updates_to_{settings.target_value:g}": float(reached[param_server.UPDATES].iloc[0])
                if len(reached)
                else math.nan,
                "staleness_mean": mean,
                "staleness_max": max((i for i, c in enumerate(counts) if c), default=math.nan),
            }
        )
    table = pd.DataFrame(runs)
    table.to_csv(directory / "runs.csv", index=False)

    figures = {}
    for x, name in ((TRAIN_TIME_S, "target_vs_time.png"), (param_server.UPDATES, "target_vs_updates.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, curve in curves.groupby("run", sort=False):
            style = "--" if curve["straggler_delay_s"].iloc[0] else "-"
            ax.plot(curve[x], curve[target.key], style, marker="o", markersize=3, label=str(label))
        ax.set_xlabel("training time (s)" if x == TRAIN_TIME_S else "optimizer updates")
        ax.set_ylabel(target.label)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
        figures[name] = x
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, counts in staleness.items():
        total = sum(counts) or 1
        ax.bar(
            [i + (0.2 if "straggler" in label else -0.2) for i in range(len(counts))],
            [c / total for c in counts],
            width=0.4,
            label=label,
        )
    ax.set_xlabel("staleness (updates applied since the worker pulled)")
    ax.set_ylabel("fraction of gradients")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "staleness.png", dpi=100)
    plt.close(fig)

    lines = [
        "# Synchronous data parallelism vs asynchronous parameter server",
        "",
        f"Task {settings.task}, {settings.workers} workers, {settings.epochs} epochs, {settings.optimizer} "
        f"lr {settings.lr:g}, seed {settings.seed}; straggler: the last worker sleeps "
        f"{settings.straggler_delay:g} s before each step. Training time excludes start-up and evaluation.",
        "",
        _markdown(table),
        "",
        "## What the straggler costs",
        "",
    ]
    for mode in MODES:
        base = table[(table["mode"] == mode) & (table["straggler_delay_s"] == 0)]
        slow = table[(table["mode"] == mode) & (table["straggler_delay_s"] > 0)]
        if len(base) and len(slow):
            lines.append(
                f"- {mode}: throughput x{slow['samples_per_s'].iloc[0] / base['samples_per_s'].iloc[0]:.2f}, "
                f"training time x{slow['train_time_s'].iloc[0] / base['train_time_s'].iloc[0]:.2f}, "
                f"final {target.key} {base[f'final_{target.key}'].iloc[0]:.4f} -> "
                f"{slow[f'final_{target.key}'].iloc[0]:.4f}"
            )
    lines += ["", "## Staleness of the asynchronous runs (fraction of gradients)", ""]
    for label, counts in staleness.items():
        total = sum(counts) or 1
        shown = ", ".join(f"{i}: {c / total:.3f}" for i, c in enumerate(counts) if c)
        lines.append(f"- {label} ({total} gradients): {shown}")
    lines += ["", *(f"![{name}]({name})" for name in (*figures, "staleness.png")), ""]
    (directory / "report.md").write_text("\n".join(lines))
    print("\n".join(lines[4:]), flush=True)
    print(f"Report: {directory}", flush=True)
    return directory


def _markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in row) + " |"
        for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
