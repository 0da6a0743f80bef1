"""Make an interrupted Tune experiment restorable when its last snapshot names a deleted checkpoint.

Tune keeps the newest checkpoints of a trial (`CheckpointConfig(num_to_keep)`) and deletes older ones
as new ones arrive, while its experiment snapshot (what `Tuner.restore` reads) is written a little
later. A driver that dies (or storage that stops accepting writes) in between leaves a snapshot that
names a checkpoint no longer on disk, and Ray 2.60 then fails that trial on resume ("Could not recover
from checkpoint as it does not exist on storage anymore"). The trial's newer checkpoints are still
there, so before restoring, each unfinished trial whose named checkpoint is missing gets a copy of its
newest checkpoint under that name: it resumes from further along, and nothing is lost.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

UNFINISHED = {"PENDING", "RUNNING", "PAUSED", "ERROR"}


def _newest_state_file(experiment: Path) -> Path | None:
    files = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def repair_checkpoint_references(experiment: str | Path) -> list[str]:
    """Restore missing named checkpoints of unfinished trials (local storage); returns the trial ids."""
    experiment = Path(experiment)
    state_file = _newest_state_file(experiment)
    if state_file is None:
        return []
    try:
        trial_data = json.loads(state_file.read_text())["trial_data"]
    except (OSError, ValueError, KeyError):
        return []  # Tune reports an unreadable snapshot itself
    repaired = []
    for trial_json, runtime_json in trial_data:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        named = (runtime.get("last_result") or {}).get("checkpoint_dir_name")
        if trial.get("status") not in UNFINISHED or not named:
            continue
        trial_dir = experiment / trial["relative_logdir"]
        if (trial_dir / named).exists():
            continue
        newer = sorted(p for p in trial_dir.glob("checkpoint_*") if p.is_dir() and p.name > named)
        if newer:
            shutil.copytree(newer[-1], trial_dir / named)
            repaired.append(trial["trial_id"])
    return repaired
