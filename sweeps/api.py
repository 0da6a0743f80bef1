"""The Python face of a study: `optsweep.Study(task, optimizers=...).run()`; the command line and the
study file build the same `StudySpec` and come through here.

Python objects go where a script has them: a `Task` object, optimizer classes, search spaces as `spaces`
Params or plain declarations. Every setting of the spec (`sweeps.spec`) is a keyword argument, checked
before anything starts; a bad one is an `OptsweepError` (a `ValueError`) with one line.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from optsweep.errors import OptsweepError
from optsweep.sweeps import spec as spec_module
from optsweep.sweeps.spec import StudySpec


@dataclass(frozen=True)
class StudyResult:
    """What a finished study hands back: its tables (as in `report/`), the verdict and where it lies."""

    experiment_dir: str
    report_dir: Path
    trials: pd.DataFrame  # one row per trial (report/trials.csv)
    summary: pd.DataFrame  # one row per optimizer (report/summary.csv)
    verdict: str
    elapsed_s: float = 0.0


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
    (or to replace a built-in's). `settings`: any other setting of the study spec (`StudySpec`: budget,
    search, resources, storage, tracking), with the spec's defaults, the same as the command line's.
    """

    def __init__(
        self,
        task: Any = "digits",
        *,
        optimizers: Iterable[Any] | None = None,
        search_spaces: Mapping[str, Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        from optsweep.trainables.tasks import Task

        values: dict[str, Any] = dict(settings)
        self._task: Any = None
        if isinstance(task, Task):
            if settings.get("task_args"):
                raise OptsweepError(
                    "task_args are for a task given by name or import path, not a Task object"
                )
            self._task = task
            values["task"] = task.name
        elif isinstance(task, str):
            values["task"] = task
        else:
            raise OptsweepError(
                f"task={task!r} is invalid: it must be an optsweep Task, a built-in task name or an "
                "import path"
            )
        self._classes: dict[str, type] = {}
        if optimizers is not None:
            values["optimizers"] = self._references(optimizers)
        if search_spaces is not None:
            values["search_spaces"] = search_spaces
        values.setdefault("name", "study")
        self._spec = _built(values, named_task=self._task is None)

    @classmethod
    def from_spec(
        cls, spec: StudySpec, task: Any = None, optimizer_classes: Mapping[str, type] | None = None
    ) -> Study:
        """The study `spec` describes; `task`: a Task object it names, `optimizer_classes`: by label."""
        study = cls.__new__(cls)
        study._spec, study._task, study._classes = spec, task, dict(optimizer_classes or {})
        return study

    @property
    def spec(self) -> StudySpec:
        """The study's settings, checked: what `run` runs (and `study.yaml` records)."""
        return self._spec

    def _references(self, optimizers: Iterable[Any]) -> Any:
        import torch

        from optsweep.sweeps.search.contenders import reference_of

        if isinstance(optimizers, (str, bytes)) or not isinstance(optimizers, Iterable):
            return optimizers  # the spec refuses it, naming the value
        references = []
        for optimizer in optimizers:
            if inspect.isclass(optimizer):
                if not issubclass(optimizer, torch.optim.Optimizer):
                    raise OptsweepError(
                        f"optimizers: {optimizer!r} is invalid: it is not a torch.optim.Optimizer subclass"
                    )
                reference = reference_of(optimizer)
                self._classes[spec_module.label_of(reference)] = optimizer
                references.append(reference)
            elif isinstance(optimizer, str):
                references.append(optimizer if ":" in optimizer else optimizer.strip().lower())
            else:
                raise OptsweepError(
                    f"optimizers: {optimizer!r} is invalid: it must be a name, an import path or an "
                    "optimizer class"
                )
        return references

    def plan(self, storage_path: str | None = None, **where: Any) -> Any:
        """The study resolved and checked (no Ray): what `run` would run, as `sweeps.runner.plan.Plan`.
        `where` overrides settings of the spec for this run (resources, address, tracking, fuse, ...)."""
        from optsweep.sweeps.runner import plan

        changes = dict(where)
        if storage_path is not None:
            changes["storage_path"] = storage_path
        spec = _built({**spec_module.spec_values(self._spec), **changes}, named_task=self._task is None)
        return plan.prepare(spec, self._task, self._classes)

    def run(self, storage_path: str | None = None, **where: Any) -> StudyResult:
        """Run (or resume) the study into `<storage_path>/<name>/`, print its verdict, table and where the
        report is, and return its results. `where` as in `plan`."""
        from optsweep import analysis
        from optsweep.sweeps.runner import study

        plan = self.plan(storage_path, **where)
        started = time.monotonic()
        report_dir = study.execute(plan)
        summary = pd.read_csv(report_dir / "summary.csv")
        result = StudyResult(
            experiment_dir=plan.args.experiment_dir,
            report_dir=report_dir,
            trials=pd.read_csv(report_dir / "trials.csv"),
            summary=summary,
            verdict=analysis.verdict(summary, target=plan.task.target),
            elapsed_s=time.monotonic() - started,
        )
        _print_summary(result, plan.task.target)
        return result


def _built(values: Mapping[str, Any], *, named_task: bool) -> StudySpec:
    """The spec of `values`; a Task object's name is only a label, so it is not checked as a task name."""
    return spec_module.build(values, named_task=named_task)


def _print_summary(result: StudyResult, target: Any) -> None:
    from optsweep import analysis

    print(f"\nDone in {result.elapsed_s / 60:.1f} min. {result.verdict}")
    test_column = analysis.test_mean_column(target)
    wanted = ("optimizer", "mean", "std", "ci_low", "ci_high", test_column, "n_diverged")
    columns = [c for c in wanted if c in result.summary.columns]
    print(result.summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"Report: {result.report_dir / 'report.md'}", flush=True)
