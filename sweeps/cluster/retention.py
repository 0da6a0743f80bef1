"""Checkpoint retention and a disk-use forecast.

While a trial runs, Tune keeps its last two checkpoints (the newest may be torn by a crash; the one
before is the fallback). Once a trial has finished nothing resumes from them, so `KeepCheckpoints`
deletes all but the newest `keep` of each finished trial (`--keep-checkpoints`, default 1; 0 keeps
only the results). `DiskForecast` measures the first checkpoint it sees and warns once when the
study's remaining checkpoints will not fit in the free space (local storage).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

RUNNING_CHECKPOINTS = 2  # CheckpointConfig(num_to_keep) while a trial runs
TRAIN_RUNS_DIR = "train_runs"  # where multi-worker trials' Ray Train runs keep their own checkpoints


def prune(trial_dir: str, keep: int, fs: pyarrow.fs.FileSystem | None = None) -> int:
    """Delete all but the newest `keep` `checkpoint_*` directories in `trial_dir`; returns how many."""
    if fs is None:
        fs, trial_dir = pyarrow.fs.FileSystem.from_uri(trial_dir)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    except OSError:
        return 0
    found = sorted(
        info.path
        for info in infos
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    )
    doomed = found[: max(len(found) - keep, 0)]
    for path in doomed:
        with contextlib.suppress(OSError):
            fs.delete_dir(path)
    return len(doomed)


class KeepCheckpoints(tune.Callback):
    """Tune callback: prune a trial's checkpoints when it completes (finished, stopped early or
    diverged); errored trials keep theirs, since a rerun resumes them."""

    def __init__(self, keep: int) -> None:
        self.keep = keep

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        fs = trial.storage.storage_filesystem
        prune(trial.storage.trial_fs_path, self.keep, fs)
        experiment = trial.storage.experiment_fs_path
        prune(f"{experiment}/{TRAIN_RUNS_DIR}/{trial.trial_id}", self.keep, fs)


def directory_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def checkpoint_size(experiment_dir: Path) -> int | None:
    """The size of the largest checkpoint already in the experiment (a resumed study), or None."""
    sizes = [directory_bytes(p) for p in experiment_dir.glob("*/*/checkpoint_*") if p.is_dir()]
    return max(sizes) if sizes else None


def forecast_bytes(checkpoint_bytes: int, trials_left: int, running: int, keep: int) -> int:
    """Checkpoint bytes still to be written: each trial left ends with `keep`, up to `running` trials
    hold two at once while they run."""
    return checkpoint_bytes * (trials_left * keep + running * max(RUNNING_CHECKPOINTS - keep, 0))


def warn_if_short(
    path: str,
    checkpoint_bytes: int,
    trials_left: int,
    running: int,
    keep: int,
    say: Callable[[str], None] | None = None,
) -> bool:
    """Warn (once, returns True) when the forecast exceeds the free space of `path`."""
    need = forecast_bytes(checkpoint_bytes, trials_left, running, keep)
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    if need <= free:
        return False
    (say or _stderr)(
        f"Warning: this study's remaining checkpoints need about {need / 2**20:,.0f} MB "
        f"({checkpoint_bytes / 2**20:,.1f} MB each, {trials_left} trials to go, --keep-checkpoints {keep}) "
        f"but {path} has {free / 2**20:,.0f} MB free; it will stop when the storage runs low "
        "(resumable). Free space, or use --keep-checkpoints 0."
    )
    return True


class DiskForecast(tune.Callback):
    """Tune callback (local storage): after the first checkpoint, warn if the rest will not fit."""

    def __init__(self, path: str, trials_left: int, keep: int, say: Callable[[str], None] | None = None):
        self.path = path
        self.trials_left = trials_left
        self.keep = keep
        self.say = say
        self._done = False

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            size = directory_bytes(Path(checkpoint.path))
            running = sum(t.status == "RUNNING" for t in trials)
            warn_if_short(self.path, size, self.trials_left, running, self.keep, self.say)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
