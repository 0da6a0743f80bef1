"""A study described in one YAML file (the torchtune habit: the file is the study's record; user code
by import path; command-line flags override it):

    name: lion_vs_adam
    task: my_pkg.tasks:build_task        # or a built-in task, or path/to/my_task.py:build_task
    task_args: {hidden: 64}
    optimizers: [adam, my_pkg.opt:Lion]
    search_spaces:
      lion:
        lr: {log_uniform: [1.0e-5, 1.0e-2]}
        beta1: {one_minus_log_uniform: [0.8, 0.98]}
        weight_decay: {log_uniform_or_zero: [1.0e-5, 1.0e-1]}
    num_samples: 8
    seeds: 3
    confirm_seeds: 10                    # fresh seeds for each optimizer's chosen configuration
    max_epochs: 10
    scheduler: asha

Keys are the study spec's settings (`optsweep run --help` lists them as flags, with dashes); an unknown
key or a bad value is one line naming the key and the file. Relative file paths in `task` and
`optimizers` are relative to the study file; settings not in the file take the spec's defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from optsweep.errors import OptsweepError
from optsweep.sweeps import spec as spec_module
from optsweep.sweeps.spec import StudySpec

LIST_KEYS = ("optimizers", "schedules", "log_to", "python_path")
"""Keys whose value is a list (also accepted as a comma-separated string)."""


def load(path: str | os.PathLike[str]) -> StudySpec:
    """The study in `path`, checked (the command line's flags may then override it); one-line errors."""
    file = Path(path).expanduser()
    spec = spec_module.build(read(file), door="file", where=str(file))
    check_search_spaces(spec.search_spaces, file)
    return spec


def check_search_spaces(search_spaces: Any, file: Path) -> None:
    """Each declared space is one the search understands; a mistake names the file."""
    if not isinstance(search_spaces, dict):
        return  # the spec refuses it, naming the file
    from optsweep.sweeps.search import spaces

    for label, space in search_spaces.items():
        try:
            spaces.parse_space(dict(space) if isinstance(space, dict) else space)
        except OptsweepError as error:
            raise OptsweepError(f"search_spaces: {label}: {error} (in {file})") from None


def read(file: Path) -> dict[str, Any]:
    """The settings `file` holds (its name defaulting to the file's stem), with its relative paths made
    absolute; not yet checked."""
    try:
        text = file.read_text()
    except OSError as error:
        raise OptsweepError(f"cannot read the study file {file}: {error.strerror or error}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", error)
        raise OptsweepError(f"the study file {file} is not valid YAML{line}: {problem}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise OptsweepError(
            f"the study file {file} must be a mapping of settings, not a {type(values).__name__}"
        )
    values = {str(key): value for key, value in values.items()}
    unknown = sorted(key for key in values if key not in spec_module.FIELDS)
    if unknown:
        raise OptsweepError(
            f"unknown setting(s) {', '.join(unknown)} in {file}; valid: {', '.join(spec_module.FIELDS)}"
        )
    values.setdefault("name", file.stem)
    for key in LIST_KEYS:
        if isinstance(values.get(key), str):
            values[key] = [item.strip() for item in values[key].split(",") if item.strip()]
    base = file.resolve().parent
    if isinstance(values.get("task"), str):
        values["task"] = _relative_to(base, values["task"])
    if isinstance(values.get("python_path"), list):
        values["python_path"] = [
            str(base / os.path.expanduser(item)) if isinstance(item, str) else item
            for item in values["python_path"]
        ]
    if isinstance(values.get("optimizers"), list):
        values["optimizers"] = [
            _relative_to(base, item) if isinstance(item, str) else item for item in values["optimizers"]
        ]
    return values


def _relative_to(base: Path, reference: str) -> str:
    """``tasks.py:build`` in a study file means the tasks.py beside the file."""
    where, sep, attribute = reference.rpartition(":")
    if sep and where.endswith(".py") and not os.path.isabs(os.path.expanduser(where)):
        return f"{base / where}:{attribute}"
    return reference
