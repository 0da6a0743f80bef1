"""The command line: flags generated from the study spec (`sweeps.spec`), parsed into a `StudySpec` over
the defaults (a script's, or a study file's), then handed to the Python API. A mistake costs one line and
exit 2, before Ray starts; ``--help`` imports neither torch nor Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

from optsweep import catalog
from optsweep.errors import OptsweepError
from optsweep.sweeps import spec as spec_module
from optsweep.sweeps.cluster import preflight
from optsweep.sweeps.spec import SMOKE, StudySpec

__all__ = ["build_parser", "fail", "main", "parse"]

DATASET_TASKS = catalog.DATASET_TASKS
NOT_FLAGS = ("search_spaces", "task_args")
"""Settings a study file or Python sets, not a flag (task arguments have --task-arg KEY=VALUE)."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise OptsweepError(message)


def _list(text: str) -> tuple[str, ...]:
    """A comma-separated list; registered names are case-insensitive, import paths keep their case."""
    items = (item.strip() for item in text.split(","))
    return tuple(item if ":" in item else item.lower() for item in items if item)


def _task_args(pairs: list[str]) -> dict[str, Any]:
    """--task-arg KEY=VALUE pairs; VALUE is JSON (numbers, true/false, lists) or else a plain string."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise OptsweepError(
                f"--task-arg {pair!r} is invalid: write KEY=VALUE with KEY a Python identifier"
            )
        try:
            result[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            result[key.strip()] = text
    return result


def _kind(field: str) -> Any:
    """What argparse converts a flag's text to: int, float, str, a list, or a switch (bool)."""
    annotation = spec_module.FIELDS[field].annotation
    if get_origin(annotation) in (Union, UnionType):  # X | None
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is tuple:
        return _list
    if annotation in (bool, int, float):
        return annotation
    return str


def _shown_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return "none" if value is None else str(value)


def build_parser(
    prog: str, description: str, defaults: StudySpec | Mapping[str, Any] | None = None
) -> argparse.ArgumentParser:
    """The flags: one per setting of the spec (with its help and the default it runs with), plus the
    shorthands --dataset, --model, --task-arg and --no-fuse."""
    values = _values(defaults)
    parser = _OneLineParser(prog=prog, description=description)
    groups = {
        name: parser.add_argument_group(name)
        for name in (spec_module.COMPARE, spec_module.TRAIN, spec_module.WHERE, spec_module.RESULTS)
    }
    for field in spec_module.FIELDS:
        if field in NOT_FLAGS:
            continue
        flag, kind = f"--{field.replace('_', '-')}", _kind(field)
        text = spec_module.help_of(field)
        if kind is bool:
            groups[spec_module.group_of(field)].add_argument(
                flag, action="store_true", default=None, help=text
            )
            continue
        if "default:" not in text:
            text += f" (default: {_shown_default(values[field])})"
        metavar = "N" if field == "confirm_seeds" else ("K" if field == "fuse" else None)
        groups[spec_module.group_of(field)].add_argument(flag, type=kind, help=text, metavar=metavar)
    train, where = groups[spec_module.TRAIN], groups[spec_module.WHERE]
    train.add_argument(
        "--task-arg",
        dest="task_arg",
        action="append",
        metavar="KEY=VALUE",
        help="an argument of the task's factory (repeatable; VALUE is read as JSON, else as a string)",
    )
    train.add_argument(
        "--dataset",
        help=f"shorthand for --task with a built-in classification task ({', '.join(DATASET_TASKS)})",
    )
    train.add_argument("--model", help=f"shorthand for --task-arg model=NAME ({', '.join(catalog.MODELS)})")
    where.add_argument(
        "--no-fuse", action="store_true", default=None, help="train every trial in its own process (--fuse 0)"
    )
    return parser


def _values(defaults: StudySpec | Mapping[str, Any] | None) -> dict[str, Any]:
    """Every setting's value: the given defaults over the spec's own."""
    base = {field: spec_module.default_of(field) for field in spec_module.FIELDS}
    if isinstance(defaults, StudySpec):
        return {**base, **spec_module.spec_values(defaults)}
    return {**base, **dict(defaults or {})}


def parse(
    argv: list[str] | None,
    prog: str,
    description: str,
    defaults: StudySpec | Mapping[str, Any] | None = None,
    *,
    where: str | None = None,
) -> StudySpec:
    """The spec the flags in `argv` make of `defaults`; an OptsweepError with one line for a bad flag (a
    bad default from a study file names the file: `where`)."""
    ns = build_parser(prog, description, defaults).parse_args(argv)
    shorthands = ("dataset", "model", "task_arg", "no_fuse")
    given = {k: v for k, v in vars(ns).items() if v is not None and k not in shorthands}
    values = _values(defaults)
    if ns.smoke:
        values.update(SMOKE, name=f"{values['name']}-smoke")
    values.update(given)
    if ns.dataset is not None:
        if ns.task is not None:
            raise OptsweepError("give either --task or --dataset, not both")
        if ns.dataset not in DATASET_TASKS:
            raise OptsweepError(
                f"unknown dataset {ns.dataset!r} in --dataset; valid: {', '.join(DATASET_TASKS)}"
            )
        values["task"] = ns.dataset
    if ns.no_fuse:
        if ns.fuse is not None:
            raise OptsweepError("give either --fuse K or --no-fuse, not both")
        values["fuse"] = 0
    default_task = _values(defaults)["task"]
    if values["task"] != default_task:
        values["task_args"] = {}  # the default task's arguments do not carry over to another task
    values["task_args"] = {**values["task_args"], **_task_args(ns.task_arg or [])}
    if ns.model is not None:
        values["task_args"]["model"] = ns.model
    try:
        spec = spec_module.build(values, door="cli")
        preflight.check(spec)
    except spec_module.SpecError as error:
        if where is not None and _blames_the_file(error, ns):  # the study file's value, no flag's
            raise error.for_door("file", where) from None
        raise error.for_door("cli") from None
    return spec


def _blames_the_file(error: spec_module.SpecError, ns: argparse.Namespace) -> bool:
    """Whether the settings `error` names all came from the study file (no flag gave them)."""
    named = [field for field in spec_module.FIELDS if "{" + field + "}" in error.template]
    return bool(named) and all(getattr(ns, field, None) is None for field in named)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    defaults: StudySpec | Mapping[str, Any] | None = None,
    where: str | None = None,
) -> int:
    """Parse, run the study through the Python API, print its summary; the process's exit code."""
    try:
        spec = parse(argv, prog, description, defaults, where=where)
    except OptsweepError as error:
        return fail(str(error))
    from optsweep.sweeps import api
    from optsweep.sweeps.cluster.storage_guard import StorageError
    from optsweep.sweeps.runner import study

    try:
        api.Study.from_spec(spec).run()
    except StorageError as error:
        return _storage_failure(str(error))
    except OSError as error:
        if error.errno not in study.STORAGE_ERRNOS:
            raise
        return _storage_failure(f"storage error: {error}")
    except spec_module.SpecError as error:  # found while preparing: a setting, spelled as a flag
        return fail(str(error.for_door("cli")))
    except OptsweepError as error:
        return fail(str(error))
    except KeyboardInterrupt as interrupt:
        print(f"\nInterrupted. {study.resume_hint(spec)}", file=sys.stderr)
        return getattr(interrupt, "exit_code", 130)
    return 0


def _storage_failure(message: str) -> int:
    print(
        f"error: {message}; the experiment is left resumable: fix the storage, then run the same "
        "command again",
        file=sys.stderr,
    )
    return 1
