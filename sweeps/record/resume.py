"""Make an interrupted Tune experiment safe to restore, or refuse it with one line.

Before `Tuner.restore` (the first check on any storage, the others on local storage):

- The experiment state that Tune would restore is missing or damaged (a driver killed within a moment
  of creating the experiment, a truncated write). Ray 2.60 then logs "Failed to restore the run state"
  and trains a trial with an empty config, which the defaults fill in. An older whole state is used
  instead when there is one; an experiment in which no trial ran yet is started afresh; otherwise the
  resume is refused (`DamagedExperimentError`), since the trials' configurations cannot be trusted.
- The stored trials keep the run-time settings they were created with (resources, data directory):
  Tune restores each unfinished trial with its stored config and resource request, so a rerun with
  corrected resources (`--cpus-per-worker 0.5` for a study whose workers never fit) would be accepted
  and ignored. `apply_run_settings` gives the unfinished trials the current values first.
- The last snapshot names a checkpoint that Tune's rotation (`CheckpointConfig(num_to_keep)`) deleted
  before its next snapshot; Ray 2.60 then fails that trial on resume ("Could not recover from
  checkpoint as it does not exist on storage anymore"). The trial's newer checkpoints are still there,
  so it gets a copy of its newest checkpoint under the old name and resumes from further along.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs

from optsweep import atomic_files
from optsweep.errors import OptsweepError
from optsweep.sweeps import _ray_compat

UNFINISHED = {"PENDING", "RUNNING", "PAUSED", "ERROR"}
STATE_GLOB = "experiment_state-*.json"
DAMAGED_SUFFIX = ".damaged"


class DamagedExperimentError(OptsweepError):
    """An experiment that cannot be resumed safely; the message is one line for the user."""


def state_file_tune_restores(experiment: str | Path) -> Path | None:
    """The experiment state `Tuner.restore` reads: Ray 2.60 takes the greatest file name (the names
    carry the session's start time), not the newest file; a resumed run rewrites an older session's
    file after writing its own, so the newest by modification time can be a stale snapshot."""
    files = sorted(Path(experiment).glob(STATE_GLOB), key=lambda p: p.name)
    return files[-1] if files else None


def read_trial_data(state_file: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(trial, runtime metadata) pairs of an experiment state file; ValueError if it is damaged."""
    try:
        text = state_file.read_text()
    except OSError as error:
        raise ValueError(f"{state_file.name} is unreadable ({type(error).__name__})") from None
    return parse_trial_data(text, state_file.name)


def parse_trial_data(text: str | bytes, name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Like `read_trial_data`, from the file's content (any storage)."""
    try:
        state = json.loads(text)
        pairs = [(json.loads(trial), json.loads(runtime)) for trial, runtime in state["trial_data"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{name} is unreadable ({type(error).__name__})") from None
    for trial, _runtime in pairs:
        if not (isinstance(trial, dict) and "trial_id" in trial and isinstance(trial.get("config"), dict)):
            raise ValueError(f"{name} holds a trial without its id or config")
    if not pairs:
        raise ValueError(f"{name} lists no trials")
    return pairs


@dataclass
class RestorePlan:
    """What `prepare_restore` decided: restore (True) or start afresh, and what to tell the user."""

    restore: bool
    notes: list[str] = field(default_factory=list)


def prepare_restore(experiment: str | Path, name: str) -> RestorePlan:
    """Check the state Tune would restore; set damaged states aside when an older whole one exists.
    `experiment` is a local path or a URI (s3://...): the same checks on any storage.

    Raises DamagedExperimentError when no whole state is left but trials have results there."""
    fs, root = pyarrow.fs.FileSystem.from_uri(_absolute(experiment))
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    states = sorted(
        (
            e
            for e in entries
            if e.type == pyarrow.fs.FileType.File and fnmatch.fnmatch(e.base_name, STATE_GLOB)
        ),
        key=lambda e: e.base_name,
        reverse=True,
    )
    problems = []
    for state in states:
        try:
            with fs.open_input_stream(state.path) as f:
                parse_trial_data(f.read(), state.base_name)
        except (OSError, ValueError) as error:
            problems.append((state, str(error)))
            continue
        notes = []
        for damaged, problem in problems:
            fs.move(damaged.path, f"{root}/.{damaged.base_name}{DAMAGED_SUFFIX}")
            notes.append(f"{name}: {problem}; set aside, resuming from the older {state.base_name}")
        return RestorePlan(True, notes)
    what = "; ".join(problem for _, problem in problems) or "its experiment state is missing"
    trials = _trial_dirs(fs, entries)
    if not trials:
        fs.delete_dir(root)
        return RestorePlan(False, [f"{name}: {what}, and no trial had started; starting the {name} afresh"])
    raise DamagedExperimentError(
        f"cannot resume {name} in {experiment}: {what}, and {trials} trial(s) have results there "
        f"whose configurations cannot be trusted; move {experiment} aside to run the {name} afresh "
        "(python -m optsweep.analysis.report still reads the moved trials)"
    )


def _absolute(experiment: str | Path) -> str:
    text = str(experiment)
    return text if "://" in text else os.path.abspath(text)


def _trial_dirs(fs: pyarrow.fs.FileSystem, entries: list[pyarrow.fs.FileInfo]) -> int:
    """How many trial directories (with params.json or result.json) are among `entries`."""
    count = 0
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.Directory:
            continue
        found = fs.get_file_info([f"{entry.path}/params.json", f"{entry.path}/result.json"])
        count += any(info.type == pyarrow.fs.FileType.File for info in found)
    return count


def repair_checkpoint_references(experiment: str | Path) -> list[str]:
    """Restore missing named checkpoints of unfinished trials (local storage); returns the trial ids."""
    experiment = Path(experiment)
    state_file = state_file_tune_restores(experiment)
    if state_file is None:
        return []
    try:
        trial_data = read_trial_data(state_file)
    except ValueError:
        return []  # prepare_restore deals with a damaged state
    repaired = []
    for trial, runtime in trial_data:
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


RUN_SETTINGS = ("cpus_per_worker", "gpus_per_worker", "data_dir")
"""Trial settings that may change between a run and its resume (they do not change what is measured)."""


def apply_run_settings(
    experiment: str | Path, settings: dict[str, Any], resources: dict[str, float]
) -> list[str]:
    """Give the unfinished trials in the state Tune restores the current `settings` (of RUN_SETTINGS)
    and trial `resources` (a `tune.with_resources` dict); returns the ids of the trials changed."""
    state_file = state_file_tune_restores(experiment)
    if state_file is None:
        return []
    state = json.loads(state_file.read_text())
    # Stored the way Trial.__getstate__ stores it: cloudpickled, hex-encoded.
    request = _ray_compat.stored_resource_request(resources)
    wanted = {key: settings[key] for key in RUN_SETTINGS if key in settings}
    changed = []
    for index, (trial_json, runtime_json) in enumerate(state["trial_data"]):
        trial = json.loads(trial_json)
        stored = trial.get("config", {}).get("settings")
        if trial.get("status") == "TERMINATED" or not isinstance(stored, dict):
            continue
        if all(stored.get(key) == value for key, value in wanted.items()):
            continue
        for config_key in _ray_compat.stored_trial_config_keys():
            if isinstance(trial.get(config_key, {}).get("settings"), dict):
                trial[config_key]["settings"].update(wanted)
        trial["placement_group_factory"] = request
        state["trial_data"][index] = [json.dumps(trial, indent=2), runtime_json]
        changed.append(str(trial["trial_id"]))
    if changed:
        atomic_files.write_text(state_file, json.dumps(state))
    return changed
