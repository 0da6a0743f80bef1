"""The Python face of a study: `optsweep.Study(task, optimizers=...).run(storage_path=...)`.

The same study as the command line and the study file (one runner, `sweeps.study`), with Python
objects where a script has them: a `Task` object, optimizer classes, search spaces as `spaces` Params
or plain declarations. Errors are exceptions (`ValueError` with the same one-line messages) instead of
exit codes.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from optsweep.trainables.tasks import Task

from . import cli, contenders, spaces, study


@dataclass(frozen=True)
class StudyResult:
    """What a finished study hands back: its tables (as in `report/`), the verdict and where it lies."""

    experiment_dir: str
    report_dir: Path
    trials: pd.DataFrame  # one row per trial (report/trials.csv)
    summary: pd.DataFrame  # one row per optimizer (report/summary.csv)
    verdict: str


class Study:
    """An optimizer comparison on a task: each optimizer tuned in its own search space with the same
    budget (`num_samples` configurations x `seeds` seeds), early-stopped per `scheduler`, then its chosen
    configuration retrained on `confirm_seeds` fresh seeds (0: no confirmation stage).

        result = Study(my_task, optimizers=["adam", "sgd", Lion], search_spaces={"lion": {...}},
                       num_samples=8, seeds=3).run(storage_path="results")
        print(result.verdict); result.summary

    `task`: a `Task`, a built-in task name or an import path (with `task_args`). `optimizers`: registered
    names, import paths or `torch.optim.Optimizer` subclasses; a class is labelled by its lowercased
    name. `search_spaces`: label -> {hyperparameter: distribution} for optimizers that do not bring one
    (or to replace a built-in's). The other arguments are the command line's flags.
    """

    def __init__(
        self,
        task: Task | str = "digits",
        *,
        task_args: Mapping[str, Any] | None = None,
        optimizers: Iterable[str | type[torch.optim.Optimizer]] = ("sgd", "adam", "adamw"),
        search_spaces: Mapping[str, Mapping[str, Any]] | None = None,
        num_samples: int = 24,
        seeds: int = 3,
        confirm_seeds: int = 10,
        max_epochs: int | None = None,
        batch_size: int | None = None,
        schedules: Iterable[str] = spaces.SCHEDULES,
        lr_min: float | None = None,
        lr_max: float | None = None,
        scheduler: str = "asha",
        search: str = "random",
        search_seed: int = 0,
        name: str = "study",
    ) -> None:
        if isinstance(task, Task):
            if task_args:
                raise ValueError("task_args are for a task given by name or import path, not a Task object")
            self._task: Task | None = task
            task_spec = task.name
        elif isinstance(task, str):
            self._task = None
            task_spec = task
        else:
            raise ValueError(
                f"task must be an optsweep Task, a built-in task name or an import path; got {task!r}"
            )
        self._classes: dict[str, type] = {}
        references = []
        for optimizer in optimizers:
            if inspect.isclass(optimizer):
                if not issubclass(optimizer, torch.optim.Optimizer):
                    raise ValueError(f"optimizer {optimizer!r} is not a torch.optim.Optimizer subclass")
                reference = contenders.reference_of(optimizer)
                self._classes[contenders.label_of(reference)] = optimizer
                references.append(reference)
            elif isinstance(optimizer, str):
                references.append(optimizer if ":" in optimizer else optimizer.strip().lower())
            else:
                raise ValueError(f"optimizer {optimizer!r} is neither a name, an import path nor a class")
        self._settings: dict[str, Any] = {
            "name": name,
            "optimizers": tuple(references),
            "num_samples": num_samples,
            "seeds": seeds,
            "confirm_seeds": confirm_seeds,
            "task": task_spec,
            "task_args": dict(task_args or {}),
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "search_spaces": {label: dict(space) for label, space in (search_spaces or {}).items()},
            "schedules": tuple(schedules),
            "lr_min": lr_min,
            "lr_max": lr_max,
            "scheduler": scheduler,
            "search": search,
            "search_seed": search_seed,
        }
        for choice, allowed in (("scheduler", ("asha", "fifo")), ("search", ("random", "grid", "optuna"))):
            if self._settings[choice] not in allowed:
                raise ValueError(
                    f"{choice} {self._settings[choice]!r} is invalid; allowed: {', '.join(allowed)}"
                )

    def plan(self, storage_path: str = cli.DEFAULT_STORAGE, **where: Any) -> study.Plan:
        """The study resolved and checked (no Ray): what `run` would run. `where` takes `run`'s options."""
        unknown = sorted(set(where) - set(_RUN_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(_RUN_OPTIONS)}")
        values = {**self._settings, **where, "storage_path": storage_path}
        if "log_to" in values:
            values["log_to"] = tuple(values["log_to"])
        args = cli.StudyArgs(**values)
        cli.validate(args, named_task=self._task is None)
        args = dataclasses.replace(
            args,
            storage_path=args.storage_path
            if args.is_remote_storage
            else os.path.abspath(os.path.expanduser(args.storage_path)),
            data_dir=os.path.abspath(os.path.expanduser(args.data_dir)) if args.data_dir else None,
        )
        return study.prepare(args, self._task, self._classes)

    def run(self, storage_path: str = cli.DEFAULT_STORAGE, **where: Any) -> StudyResult:
        """Run (or resume) the study into `<storage_path>/<name>/` and return its results.

        Options (`where`): address, workers_per_trial, mode, staleness_aware_lr, cpus_per_worker,
        gpus_per_worker, max_concurrent, keep_checkpoints, trust_storage,
        data_dir, log_to, tracking_uri, as on the command line, and fuse (None: fused groups of K members
        by the memory rule where the study allows it; 0: unfused; K: groups of up to K).
        """
        plan = self.plan(storage_path, **where)
        report_dir = study.execute(plan)
        summary = pd.read_csv(report_dir / "summary.csv")
        from optsweep import analysis

        return StudyResult(
            experiment_dir=plan.args.experiment_dir,
            report_dir=report_dir,
            trials=pd.read_csv(report_dir / "trials.csv"),
            summary=summary,
            verdict=analysis.verdict(summary, target=plan.task.target),
        )


_RUN_OPTIONS = (
    "address",
    "workers_per_trial",
    "cpus_per_worker",
    "gpus_per_worker",
    "max_concurrent",
    "data_dir",
    "log_to",
    "tracking_uri",
    "mode",
    "staleness_aware_lr",
    "keep_checkpoints",
    "trust_storage",
    "fuse",
)
