"""Read what Ray Tune stored on disk, without Ray: experiment state, trial configs, results, errors.

This module only parses files into plain Python objects; turning them into tables and deciding a
trial's status is `analysis.loading`'s job.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.vocabulary import CONFIGURATION_KEY, SEARCH, STAGE_KEY, member_configs

REPORT_DIR_NAME = "report"
MAX_DEPTH = 4  # how deep below the experiment directory to look for Tune experiments
STATE_GLOB = "experiment_state-*.json"
_TRIAL_ID_IN_DIRNAME = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


class NotAnExperimentError(OptsweepError):
    """The directory exists but holds no Ray Tune experiment."""


@dataclass
class RawTrial:
    """One trial as Tune left it on disk (any field may be missing for a half-finished run)."""

    trial_id: str
    tune_dir: Path
    tune_status: str | None = None  # None when the experiment state could not be read
    config: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    error_message: str | None = None  # last line of error.txt, if the file exists
    trial_dir: Path | None = None


def find_tune_experiments(root: Path) -> list[Path]:
    """Tune experiment directories at or below `root` (skipping `root/report/`), sorted by path.

    A directory is a Tune experiment if it holds an `experiment_state-*.json` file or a
    subdirectory with a `params.json`. The search does not descend into an experiment it found,
    so trial directories (and anything the trials wrote) are never mistaken for experiments, nor
    deeper than MAX_DEPTH levels (pointing it at a home directory should not crawl the disk).
    """
    found: list[Path] = []
    pending = [(root, 0)]
    while pending:
        directory, depth = pending.pop()
        if _is_tune_experiment(directory):
            found.append(directory)
            continue
        if depth == MAX_DEPTH:
            continue
        for child in _subdirs(directory):
            if not (directory == root and child.name == REPORT_DIR_NAME):
                pending.append((child, depth + 1))
    return sorted(found)


def read_tune_experiment(tune_dir: Path) -> list[RawTrial]:
    """Every trial of one Tune experiment: those in its newest state file, plus any trial
    directory the state does not mention (the state is only saved periodically)."""
    state = read_experiment_state(tune_dir) or []
    dirs = {d.name: d for d in _trial_dirs(tune_dir)}
    claimed = {e.get("relative_logdir") for e in state} & dirs.keys()
    # Directories the state does not name: trials started after the state was last saved.
    unclaimed = {}
    for name in sorted(dirs.keys() - claimed):
        trial = _read_trial(tune_dir, None, None, None, dirs[name])
        unclaimed.setdefault(trial.trial_id, trial)
    trials: list[RawTrial] = []
    for entry in state:
        trial_id = str(entry.get("trial_id"))
        logdir = entry.get("relative_logdir")
        trial_dir = dirs.get(logdir) if isinstance(logdir, str) else None
        if trial_dir is None and trial_id in unclaimed:
            trial_dir = unclaimed.pop(trial_id).trial_dir
        trials.append(_read_trial(tune_dir, trial_id, entry.get("status"), entry.get("config"), trial_dir))
    # A directory the state does not name, of a trial that trains what a trial the state names trains, is
    # an earlier run of it: one a killed driver started after its last snapshot, which the resumed sweep
    # created and ran again (under the same id, or a new one from a searcher that does not number trials).
    named = {trial.trial_id for trial in trials}
    named_runs = {run_key(trial.config) for trial in trials} - {None}
    trials.extend(
        trial
        for trial_id, trial in unclaimed.items()
        if trial_id not in named and run_key(trial.config) not in named_runs
    )
    return trials


def run_key(config: dict[str, Any] | None) -> tuple[tuple[str, str, int, int], ...] | None:
    """What a trial trains, whatever its Tune id: (optimizer, stage, configuration, seed) of each of its runs
    (itself, or a fused group's members); None for a config without them."""
    if not isinstance(config, dict):
        return None
    units = member_configs(config) or [config]
    try:
        return tuple(
            sorted(
                (
                    str(config.get("optimizer")),
                    str(unit.get(STAGE_KEY, config.get(STAGE_KEY, SEARCH))),
                    int(unit[CONFIGURATION_KEY]),
                    int(unit.get("seed", unit.get("__trial_index__"))),
                )
                for unit in units
            )
        )
    except (KeyError, TypeError, ValueError):
        return None


def read_experiment_state(tune_dir: Path) -> list[dict[str, Any]] | None:
    """The trial entries of the `experiment_state-*.json` that Ray Tune itself restores, or None if
    there is none or it cannot be parsed (the caller then falls back to the trial directories).

    Tune (2.60) restores the file with the greatest name (the names carry the session's start time),
    not the newest by modification time: a resumed run rewrites the older session's file a moment
    after writing its own, so the newest by mtime can be a stale snapshot."""
    candidates = sorted(tune_dir.glob(STATE_GLOB), key=lambda p: p.name)
    if not candidates:
        return None
    newest = candidates[-1]
    try:
        state = json.loads(newest.read_text())
        entries = []
        for trial_json, _runtime_json in state["trial_data"]:
            entry = json.loads(trial_json)
            if not isinstance(entry, dict) or "trial_id" not in entry:
                raise ValueError("trial entry without trial_id")
            entries.append(entry)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(
            f"{newest}: unreadable experiment state ({exc.__class__.__name__}); "
            "using the trial directories only, so trials that never started are not listed",
            stacklevel=2,
        )
        return None
    return entries


def read_results(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a `result.json`; lines that do not parse (a line cut off by a crash)
    are skipped."""
    if not path.is_file():
        return []
    results = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            results.append(record)
    return results


def read_progress(path: Path) -> list[dict[str, Any]]:
    """The rows of a `progress.csv` (Tune's CSV copy of the results, keys flattened with '/'), as
    results: numbers and booleans parsed, flattened keys nested again, empty cells left out."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", errors="replace") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []
    results = []
    for row in rows:
        result: dict[str, Any] = {}
        for key, text in row.items():
            if key is None or text is None or text == "":
                continue
            *parents, name = key.split("/")
            target = result
            for parent in parents:
                target = target.setdefault(parent, {})
                if not isinstance(target, dict):
                    break
            else:
                target[name] = _cell(text)
        results.append(result)
    return results


def merge_results(lines: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """result.json's lines, with the progress.csv rows of iterations result.json lacks, in iteration
    order. Ray 2.60 rewrites a restarted trial's result.json from its copy in storage, which can be
    older than the file it replaces (a trial paused and resumed before its files were synced): its
    first epochs are then lost from result.json while progress.csv, written the same way but at other
    moments, usually keeps them."""
    seen = {line.get("training_iteration") for line in lines}
    missing = [row for row in rows if row.get("training_iteration") not in seen]
    if not missing:
        return lines
    merged = lines + missing
    return sorted(merged, key=lambda r: _iteration_order(r.get("training_iteration")))


def _iteration_order(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("inf")


def _cell(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_error_message(trial_dir: Path) -> str | None:
    """The last non-empty line of `error.txt` (where Python puts the exception), or None."""
    path = trial_dir / "error.txt"
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "error.txt is empty"


def _read_trial(
    tune_dir: Path,
    trial_id: str | None,
    status: Any,
    config: Any,
    trial_dir: Path | None,
) -> RawTrial:
    results: list[dict[str, Any]] = []
    error_message = None
    if trial_dir is not None:
        params = _read_json_dict(trial_dir / "params.json")
        if params is not None:
            config = params  # the trial's own copy; identical to the state's when both exist
        results = merge_results(
            read_results(trial_dir / "result.json"), read_progress(trial_dir / "progress.csv")
        )
        error_message = read_error_message(trial_dir)
    if trial_id is None:
        trial_id = _trial_id_from(results, trial_dir)
    return RawTrial(
        trial_id=trial_id,
        tune_dir=tune_dir,
        tune_status=status if isinstance(status, str) else None,
        config=config if isinstance(config, dict) else {},
        results=results,
        error_message=error_message,
        trial_dir=trial_dir,
    )


def _trial_id_from(results: list[dict[str, Any]], trial_dir: Path | None) -> str:
    for record in results:
        if isinstance(record.get("trial_id"), str):
            return record["trial_id"]
    name = trial_dir.name if trial_dir is not None else "unknown"
    match = _TRIAL_ID_IN_DIRNAME.search(name)
    return match.group(1) if match else name


def _read_json_dict(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_tune_experiment(directory: Path) -> bool:
    return any(directory.glob(STATE_GLOB)) or bool(_trial_dirs(directory))


def _trial_dirs(directory: Path) -> list[Path]:
    return [d for d in _subdirs(directory) if (d / "params.json").is_file()]


def _subdirs(directory: Path) -> list[Path]:
    try:
        return sorted(d for d in directory.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        return []
