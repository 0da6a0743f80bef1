"""`<experiment>/study.yaml`: the resolved study as a study file, so that `optsweep run <that file>` reruns
(or resumes) it from any directory. Task and optimizers are written as references that work anywhere:
built-in names, absolute file paths, or import paths with the directories they import from
(`python_path`). A study whose task or optimizer is a Python object without an import path (a Task
object, a class defined in the running script) gets no file: `write` says why instead.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from optsweep.sweeps.record import study_record
from optsweep.sweeps.search import spaces
from optsweep.sweeps.spec import FIELDS, StudySpec, spec_values
from optsweep.vocabulary import STUDY_YAML

RUNTIME_ONLY = ("address", "trust_storage", "smoke")
"""Settings of one run, not of the study: a rerun elsewhere chooses its own."""


def study_file(
    spec: StudySpec, task: Any, contenders: list[Any], *, task_is_named: bool
) -> tuple[dict[str, Any] | None, str]:
    """(the study file's settings, "") or (None, why no file reruns this study)."""
    if not task_is_named:
        return None, (
            f"the task is a Task object given in Python ({spec.task}); give it as an import path "
            "(my_pkg.tasks:build_task) to get a study file that reruns it"
        )
    values = {key: value for key, value in spec_values(spec).items() if key not in RUNTIME_ONLY}
    for contender in contenders:
        if contender.reference.startswith("__main__:"):
            return None, (
                f"optimizer {contender.label} is a class defined in the script that ran the study; move it "
                "into a module and give its import path to get a study file that reruns it"
            )
    references = [contender.reference for contender in contenders]
    values["optimizers"] = references
    from optsweep.sweeps.cluster.shipping import user_code_paths

    roots = user_code_paths([spec.task, *references], task)  # local code by import path, not installed
    values["python_path"] = list(dict.fromkeys([*spec.python_path, *(os.path.dirname(r) for r in roots)]))
    values["search_spaces"] = {
        label: spaces.space_to_json(spaces.parse_space(dict(space)))
        for label, space in spec.search_spaces.items()
    }
    return {key: _plain(values[key]) for key in FIELDS if key in values}, ""


def write(spec: StudySpec, task: Any, contenders: list[Any], *, task_is_named: bool) -> str:
    """Write `<experiment>/study.yaml`; returns "" or why there is no file (said to the user once)."""
    values, why_not = study_file(spec, task, contenders, task_is_named=task_is_named)
    if values is None:
        return why_not
    header = (
        f"# The study {spec.name}, resolved: `optsweep run <this file>` reruns it (in the same storage\n"
        "# path it resumes; change `name` to repeat it). Runtime flags (--address, --log-to) are yours.\n"
    )
    payload = header + yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
    study_record.write_file(spec.experiment_dir, STUDY_YAML, payload.encode())
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
