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

Keys are the command line's flags with underscores (`python -m sweeps --help` lists them); an unknown
key is an error. Relative file paths in `task` and `optimizers` are relative to the study file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from . import cli

LIST_KEYS = ("optimizers", "schedules", "log_to")
"""Keys whose value is a list (also accepted as a comma-separated string)."""


def load(path: str | os.PathLike[str]) -> cli.StudyArgs:
    """The study in `path` as the defaults the command line then overrides; one-line UsageErrors."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as error:
        raise cli.UsageError(f"cannot read the study file {file}: {error.strerror or error}") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(error, "problem", error)
        raise cli.UsageError(f"the study file {file} is not valid YAML{line}: {problem}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise cli.UsageError(
            f"the study file {file} must be a mapping of settings, not a {type(values).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(cli.StudyArgs)} - {"smoke"}
    unknown = sorted(str(key) for key in values if key not in fields)
    if unknown:
        raise cli.UsageError(
            f"unknown setting(s) {', '.join(unknown)} in {file}; valid: {', '.join(sorted(fields))}"
        )
    values.setdefault("name", file.stem)
    for key in LIST_KEYS:
        if isinstance(values.get(key), str):
            values[key] = [item.strip() for item in values[key].split(",") if item.strip()]
        if key in values:
            if not isinstance(values[key], list):
                raise cli.UsageError(f"{key} in {file} must be a list, got {values[key]!r}")
            values[key] = tuple(str(item) for item in values[key])
    for key in ("task_args", "search_spaces"):
        if key in values and not isinstance(values[key], dict):
            raise cli.UsageError(f"{key} in {file} must be a mapping, got {values[key]!r}")
    _check_types(values, file)
    base = file.resolve().parent
    if isinstance(values.get("task"), str):
        values["task"] = _relative_to(base, values["task"])
    if "optimizers" in values:
        values["optimizers"] = tuple(_relative_to(base, item) for item in values["optimizers"])
    try:
        return cli.StudyArgs(**values)
    except TypeError as error:
        raise cli.UsageError(f"the study file {file} is invalid: {error}") from None


_INTEGERS = (
    "num_samples",
    "seeds",
    "confirm_seeds",
    "max_epochs",
    "batch_size",
    "search_seed",
    "workers_per_trial",
    "max_concurrent",
    "keep_checkpoints",
)
_NUMBERS = ("lr_min", "lr_max", "cpus_per_worker", "gpus_per_worker")
_STRINGS = (
    "name",
    "task",
    "scheduler",
    "search",
    "mode",
    "address",
    "storage_path",
    "data_dir",
    "tracking_uri",
)
_BOOLEANS = ("staleness_aware_lr", "trust_storage")


def _check_types(values: dict[str, Any], file: Path) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if key in _INTEGERS:
            ok = isinstance(value, int) and not isinstance(value, bool)
            kind = "an integer"
        elif key in _NUMBERS:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            kind = "a number"
        elif key in _STRINGS:
            ok = isinstance(value, str)
            kind = "a string"
        elif key in _BOOLEANS:
            ok = isinstance(value, bool)
            kind = "true or false"
        else:
            continue
        if not ok:
            raise cli.UsageError(f"{key} in {file} must be {kind}, got {value!r}")


def _relative_to(base: Path, reference: str) -> str:
    """``tasks.py:build`` in a study file means the tasks.py beside the file."""
    where, sep, attribute = reference.rpartition(":")
    if sep and where.endswith(".py") and not os.path.isabs(os.path.expanduser(where)):
        return f"{base / where}:{attribute}"
    return reference
