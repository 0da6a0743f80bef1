"""A study's identity record: `<experiment>/study.json`, the resolved study (task and its description,
target metric, optimizers with their search spaces, budget, scheduler, search).

Written once, atomically, on the first run; a rerun under the same name must resolve to the same record
(otherwise two studies would mix in one directory) and resumes; anything else is refused with one line.
Run-time settings (resources, address, storage, data directory, logging) are not part of it: they may
change between a run and its resume. The analysis reads the target metric from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.sweeps.record import study_record
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import tasks
from optsweep.trainables.tasks import Task
from optsweep.vocabulary import STUDY_BUDGET_FIELDS, TARGET_RECORD_KEY

STUDY_FILE = study_record.STUDY_FILE
CREATED = "created"
BUDGET_FIELDS = STUDY_BUDGET_FIELDS
# Fields added to the record after studies were already written with it: their value back then (a study
# recorded before the confirmation stage existed had none).
ADDED_LATER = {"mode": "sync", "staleness_aware_lr": False, "confirm_seeds": 0}
# Records written before tasks existed named a dataset and a model instead of a task.
_LEGACY_FIELDS = ("optimizers", "task", "task_args", *BUDGET_FIELDS)


def identity(
    args: StudySpec, task: Task, contenders: list[Contender], *, task_is_named: bool = True
) -> dict[str, Any]:
    """The resolved study, as plain JSON data (`task_is_named`: False for a Task object given in Python)."""
    return {
        "task": args.task,
        "task_args": tasks.explicit_arguments(args.task, args.task_args) if task_is_named else {},
        "task_description": task.describe(),
        TARGET_RECORD_KEY: task.target.to_json(),
        "optimizers": {c.label: c.record() for c in contenders},
        **{key: _jsonable(getattr(args, key)) for key in BUDGET_FIELDS},
    }


def record_or_check(experiment_dir: str, record: dict[str, Any]) -> None:
    """Write the record on the first run; on a rerun, insist that it is the same study. A record left by a
    first run that failed before any optimizer started protects nothing and is replaced."""
    try:
        recorded = study_record.read(experiment_dir)
    except study_record.DamagedRecordError as error:
        raise OptsweepError(str(error)) from None
    if recorded is not None:
        changed = differences(recorded, record)
        if not changed:
            return
        if study_record.started(experiment_dir):
            before_confirmation = "confirm_seeds" not in recorded and any(
                c.startswith("confirm_seeds ") for c in changed
            )
            hint = (
                " (it predates the confirmation stage: pass --confirm-seeds 0)" if before_confirmation else ""
            )
            raise OptsweepError(
                f"{experiment_dir} holds a study with other settings ({'; '.join(changed)}){hint}; rerun it "
                "with its own settings to resume it, or choose another --name"
            )
    study_record.write(experiment_dir, {**record, CREATED: time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded study and the current one, one phrase per field."""
    recorded = {**ADDED_LATER, **recorded}
    if "task" not in recorded:
        recorded, current = _legacy(recorded), {k: current.get(k) for k in _LEGACY_FIELDS}
        if isinstance(current["optimizers"], Mapping):
            current = {**current, "optimizers": list(current["optimizers"])}
    keys = [k for k in current if k != CREATED]
    keys += [k for k in recorded if k not in current and k != CREATED]
    changed = [k for k in keys if recorded.get(k) != current.get(k)]
    return [f"{k} {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed]


def _legacy(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A record from before tasks, in today's terms (dataset -> task, model -> a task argument)."""
    from optsweep.trainables import builtin_tasks

    upgraded = {k: recorded.get(k) for k in _LEGACY_FIELDS if k in recorded}
    dataset, model = recorded.get("dataset"), recorded.get("model")
    upgraded["task"] = dataset
    named = dataset in builtin_tasks.TASKS and model is not None
    upgraded["task_args"] = tasks.explicit_arguments(dataset, {"model": model}) if named else {}
    return upgraded


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
