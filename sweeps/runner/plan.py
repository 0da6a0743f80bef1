"""A study resolved and checked before Ray starts: the task, the optimizers with their search spaces, the
configurations a search draws, and what fuses (`prepare` -> `Plan`). Nothing here needs Ray."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from optsweep.errors import OptsweepError
from optsweep.sweeps.cluster import preflight, shipping
from optsweep.sweeps.record import identity
from optsweep.sweeps.runner import fusion
from optsweep.sweeps.search import contenders, spaces
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec, check_lr_range
from optsweep.trainables import tasks
from optsweep.trainables.tasks import Task
from optsweep.vocabulary import CONFIGURATION_KEY


@dataclass(frozen=True)
class Plan:
    """A study resolved and checked before Ray starts: its settings with the task's defaults filled in,
    the task, the optimizers with their search spaces, and the user code its workers need."""

    args: StudySpec
    task: Task
    contenders: list[Contender]
    user_code: list[str]  # local directories or .py files to ship to the workers
    task_is_named: bool = True  # False: a Task object given in Python, `args.task` only names it
    fusion: dict[str, fusion.Fusion] = dataclasses.field(default_factory=dict)  # by optimizer label

    def identity(self) -> dict[str, Any]:
        return identity.identity(self.args, self.task, self.contenders, task_is_named=self.task_is_named)


def prepare(
    args: StudySpec, task: Task | None = None, optimizer_classes: dict[str, type] | None = None
) -> Plan:
    """Resolve and check everything that can be checked without Ray; one-line ValueErrors.

    `task` is a Task object given in Python (`args.task` then only names it); otherwise `args.task` is
    built. Its data and model are built once here (a missing dataset fails now, not in every trial).
    `optimizer_classes` are optimizer classes given in Python, by label.
    """
    preflight.check(args)
    for directory in reversed(args.python_path):  # user code that is not installed
        if directory not in sys.path:
            sys.path.insert(0, directory)
    task_is_named = task is None
    if task is None:
        task = tasks.build_task(args.task, args.task_args, data_dir=args.data_dir)
    tasks.check(task)
    args = dataclasses.replace(
        args,
        max_epochs=args.max_epochs or task.max_epochs,
        batch_size=args.batch_size or task.batch_size,
    )
    contenders_ = contenders.resolve(args.references(), args.search_spaces, optimizer_classes)
    for contender in contenders_:
        check_lr_range(args, contender.label, contender.params)
    if args.search == "grid":
        args = dataclasses.replace(args, num_samples=_grid_size(args, contenders_))
    code = shipping.user_code_paths([args.task, *args.optimizers], task)
    return Plan(args, task, contenders_, code, task_is_named, fusion.decide(args, task, contenders_))


def _grid_size(args: StudySpec, contenders_: list[Contender]) -> int:
    """The configurations per optimizer of a grid search: every optimizer's grid, of one size (the same
    budget for each)."""
    sizes = {c.label: len(search_space(args, c).grid()) for c in contenders_}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{label} {size}" for label, size in sizes.items())
        raise OptsweepError(
            f"a grid search gives every optimizer the same budget, but the grids differ in size ({listed}); "
            "give each optimizer a grid of the same size"
        )
    return next(iter(sizes.values()))


def search_space(args: StudySpec, contender: Contender) -> spaces.SearchSpace:
    """The optimizer's search space in this study (its lr range, the schedules searched)."""
    return spaces.space_for(
        contender.label,
        lr_range=args.lr_range(contender.label, contender.params),
        schedules=args.schedules,
        params=contender.params,
    )


def random_search_trials(space: spaces.SearchSpace, args: StudySpec) -> list[dict[str, Any]]:
    """Each trial's configuration, in full: configurations drawn up front and crossed with the seeds, so
    every seed of a configuration gets exactly the same hyperparameters."""
    configurations = draw_configurations(space, args)
    return [
        {**hyperparameters, CONFIGURATION_KEY: number, "seed": seed}
        for number, hyperparameters in enumerate(configurations)
        for seed in range(args.seeds)
    ]


def draw_configurations(space: spaces.SearchSpace, args: StudySpec) -> list[dict[str, Any]]:
    """The hyperparameters of each configuration the search tries, drawn (or listed) up front."""
    return spaces.configurations(space, search=args.search, n=args.num_samples, seed=args.search_seed)
