"""What a study actually spent per optimizer, and how far its configurations got under early stopping.

A fair comparison gives every optimizer the same budget. `spent` sums, per optimizer, the trial-epochs
trained (in all and per stage: the search and the confirmation), the trials' wall time and the device
time they reserved (CPU- and GPU-seconds: a trial's time x its workers x CPUs or GPUs per worker);
`imbalances` names every figure more than 5% away from the optimizers' mean. `rungs_reached` counts,
per optimizer and rung, the search configurations that were judged there and the ones that went on:
from the early-stopping record the sweep keeps (`optsweep_halving.json` in each optimizer's
experiment), or, without one (FIFO, Ray's ASHA, older experiments), from how many epochs every seed of
each configuration trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from optsweep.analysis.summary import stage_rows
from optsweep.vocabulary import CONFIRM, SEARCH, STAGE_COLUMN

HALVING_STATE_FILE = "optsweep_halving.json"
IMBALANCE_TOLERANCE = 0.05
SPENT_COLUMNS = ("trials", "trial_epochs", "search_trial_epochs", "confirm_trial_epochs")
SPENT_COLUMNS += ("wall_time_s", "cpu_s", "gpu_s")


def spent(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per optimizer: trials, trial_epochs (search_trial_epochs + confirm_trial_epochs),
    wall_time_s, cpu_s, gpu_s. A table without a stage column is all search."""
    frame = trials.copy()
    frame["epochs"] = pd.to_numeric(frame.get("epochs"), errors="coerce").fillna(0)
    stage = frame[STAGE_COLUMN].fillna(SEARCH) if STAGE_COLUMN in frame else pd.Series(SEARCH, frame.index)
    frame["search_epochs"] = frame["epochs"].where(stage == SEARCH, 0)
    frame["confirm_epochs"] = frame["epochs"].where(stage == CONFIRM, 0)
    time_s = pd.to_numeric(frame.get("time_s"), errors="coerce").fillna(0)
    workers = _numeric(frame, "workers", 1.0)
    frame["wall_time_s"] = time_s
    frame["cpu_s"] = time_s * workers * _numeric(frame, "cpus_per_worker", 1.0)
    frame["gpu_s"] = time_s * workers * _numeric(frame, "gpus_per_worker", 0.0)
    grouped = frame.groupby("optimizer", sort=True)
    table = pd.DataFrame(
        {
            "trials": grouped.size(),
            "trial_epochs": grouped["epochs"].sum(),
            "search_trial_epochs": grouped["search_epochs"].sum(),
            "confirm_trial_epochs": grouped["confirm_epochs"].sum(),
            "wall_time_s": grouped["wall_time_s"].sum(),
            "cpu_s": grouped["cpu_s"].sum(),
            "gpu_s": grouped["gpu_s"].sum(),
        }
    )
    return table.reset_index()


def imbalances(table: pd.DataFrame, tolerance: float = IMBALANCE_TOLERANCE) -> list[str]:
    """One sentence per optimizer and figure more than `tolerance` away from the optimizers' mean."""
    notes = []
    if len(table) < 2:
        return notes
    for column in ("trial_epochs", "wall_time_s", "gpu_s"):
        values = table[column].astype(float)
        mean = values.mean()
        if mean <= 0:
            continue
        for optimizer, value in zip(table["optimizer"], values, strict=True):
            off = value / mean - 1
            if abs(off) > tolerance:
                notes.append(
                    f"{optimizer} spent {abs(off):.0%} {'more' if off > 0 else 'less'} {_words(column)} "
                    f"than the optimizers' mean ({value:,.1f} vs {mean:,.1f})"
                )
    return notes


def rungs_reached(experiment_dir: str | os.PathLike[str], trials: pd.DataFrame) -> pd.DataFrame:
    """Rows (optimizer, rung, judged, went_on): configurations judged at each rung and the ones that went
    on from it."""
    rows = []
    # In the study's directory; studies run one Tune experiment per optimizer kept one in each.
    root = Path(experiment_dir)
    for state_file in sorted([*root.glob(HALVING_STATE_FILE), *root.glob(f"*/{HALVING_STATE_FILE}")]):
        try:
            state = json.loads(state_file.read_text())
            for optimizer, rung, entered, survivors in state["decisions"]:
                rows.append((optimizer, int(rung), len(entered), len(survivors)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged record: the epochs below still tell the story
    recorded = {optimizer for optimizer, *_ in rows}
    for optimizer, group in stage_rows(trials, SEARCH).groupby("optimizer", sort=True):
        if optimizer in recorded or "config_id" not in group:
            continue
        reached = pd.to_numeric(group["epochs"], errors="coerce").groupby(group["config_id"]).min().dropna()
        for epochs in sorted(set(reached.astype(int)))[:-1]:
            judged = int((reached >= epochs).sum())
            rows.append((optimizer, epochs, judged, int((reached > epochs).sum())))
    table = pd.DataFrame(rows, columns=["optimizer", "rung", "judged", "went_on"])
    return table.sort_values(["optimizer", "rung"], ignore_index=True)


def _numeric(frame: pd.DataFrame, column: str, default: float) -> pd.Series:
    if column not in frame:
        return pd.Series(default, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").fillna(default).astype(np.float64)


def _words(column: str) -> str:
    return {"trial_epochs": "trial-epochs", "wall_time_s": "trial wall time", "gpu_s": "GPU time"}[column]
