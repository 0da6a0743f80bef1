"""One Tune scheduler per optimizer in one experiment: each optimizer's trials judged only against its own.

A study is one Tune experiment whose trials carry `config["optimizer"]`. A scheduler that compares trials
(Ray's ASHA: a trial goes on if it is in the top 1/rf of those that reached its rung) would compare adam's
trials with sgd's, so an optimizer that learns faster early on would stop the other's trials: the study
would measure the scheduler, not the optimizers. `PerOptimizer` gives every optimizer its own inner
scheduler (one ASHA bracket per optimizer), made on first sight of the label, and hands each only its own
trials; the choice of the next trial to run goes round the optimizers so that none starves the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial


def optimizer_label(trial: Trial) -> str:
    """The optimizer a trial belongs to: its config's label ("adam", "sgd")."""
    return str(trial.config.get("optimizer"))


class OptimizerView:
    """The controller as one optimizer's scheduler sees it: `get_trials()` lists that optimizer's trials
    only (in Ray 2.60 the one controller method FIFO's `choose_trial_to_run` calls; ASHA's `on_trial_*`
    call none); anything else a scheduler asks for is the controller's, per trial already."""

    def __init__(self, tune_controller: TuneController, optimizer: str) -> None:
        self._controller = tune_controller
        self.optimizer = optimizer

    def get_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_trials() if optimizer_label(t) == self.optimizer]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class PerOptimizer(TrialScheduler):
    """Routes every trial's events to the scheduler of its optimizer (`config["optimizer"]`), built by
    `factory` when a label is first seen, so the labels need not be known up front; `optimizers` (optional)
    makes theirs at once, in the study's order, which is then the order of the round in
    `choose_trial_to_run`. The factory must pickle (Tune keeps the scheduler in tuner.pkl): a module-level
    function or a functools.partial of one, not a lambda."""

    def __init__(self, factory: Callable[[], TrialScheduler], optimizers: Iterable[str] = ()) -> None:
        super().__init__()
        self.factory = factory
        self.schedulers: dict[str, TrialScheduler] = {}
        self._search_properties: tuple[str | None, str | None, dict[str, Any]] | None = None
        self._turn = 0  # the index in `schedulers` of the optimizer asked first next time
        for optimizer in optimizers:
            self.scheduler_of(optimizer)

    def scheduler_of(self, optimizer: str) -> TrialScheduler:
        """The optimizer's scheduler (made, and told Tune's metric and mode, on first use)."""
        scheduler = self.schedulers.get(optimizer)
        if scheduler is None:
            scheduler = self.factory()
            if self._search_properties is not None:
                metric, mode, spec = self._search_properties
                if not scheduler.set_search_properties(metric, mode, **spec):
                    raise ValueError(
                        f"the scheduler made for optimizer {optimizer!r} refuses Tune's metric {metric!r} "
                        f"and mode {mode!r}: its factory must leave them unset"
                    )
            self.schedulers[optimizer] = scheduler
        return scheduler

    @property
    def metric(self) -> str | None:
        """Tune's metric, as set through `set_search_properties` (every optimizer's scheduler has it)."""
        return None if self._search_properties is None else self._search_properties[0]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._search_properties = (metric, mode, dict(spec))
        return all(s.set_search_properties(metric, mode, **spec) for s in self.schedulers.values())

    def _route(self, tune_controller: TuneController, trial: Trial) -> tuple[TrialScheduler, OptimizerView]:
        optimizer = optimizer_label(trial)
        return self.scheduler_of(optimizer), OptimizerView(tune_controller, optimizer)

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_add(view, trial)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_error(view, trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        scheduler, view = self._route(tune_controller, trial)
        return scheduler.on_trial_result(view, trial, result)

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_complete(view, trial, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        scheduler, view = self._route(tune_controller, trial)
        scheduler.on_trial_remove(view, trial)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """Asks the optimizers' schedulers in turn, starting after the one whose trial was chosen last, so
        that while several have trials to run they take turns (each sees only its own trials)."""
        for trial in tune_controller.get_trials():  # every optimizer with trials takes part in the round
            self.scheduler_of(optimizer_label(trial))
        optimizers = list(self.schedulers)
        for step in range(len(optimizers)):
            index = (self._turn + step) % len(optimizers)
            optimizer = optimizers[index]
            chosen = self.schedulers[optimizer].choose_trial_to_run(OptimizerView(tune_controller, optimizer))
            if chosen is not None:
                self._turn = index + 1
                return chosen
        return None

    def debug_string(self) -> str:
        return "\n".join(f"{o}: {s.debug_string()}" for o, s in self.schedulers.items())
