"""Early stopping: per-configuration halving, Ray Tune's ASHA per optimizer (made safe for multi-worker
trials), or FIFO.

Ray Tune's ASHA never stops a trial whose metric is NaN; the training loop reports finite sentinels
for diverged runs and ends them itself, so ASHA sees numbers it can compare. For trials that run a
multi-worker TorchTrainer, a STOP from the scheduler is delivered to the training loop instead of
enforced (see `trainables.decisions` for why: on Ray 2.60 a stopped multi-worker trial leaks its Train
placement group and the next trial never starts).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from optsweep.sweeps.early_stopping.halving import ConfigurationHalving
from optsweep.sweeps.early_stopping.per_optimizer import PerOptimizer
from optsweep.trainables import decisions
from optsweep.vocabulary import DEFAULT_TARGET, Target

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

TIME_ATTR = "epoch"


def halving_caps_running(args: Any) -> bool:
    """Whether a study's scheduler is the per-configuration halving (it caps the running trials itself)."""
    return args.scheduler == "asha" and args.workers_per_trial == 1


def build_scheduler(
    kind: str,
    max_epochs: int,
    workers_per_trial: int,
    *,
    target: Target = DEFAULT_TARGET,
    configurations: int = 1,
    seeds: int = 1,
    state_file: str | None = None,
    max_running: int | None = None,
    optimizers: Sequence[str] | None = None,
) -> TrialScheduler:
    """Early stopping per configuration (`halving.ConfigurationHalving`: all seeds of a configuration go on
    or stop together, decided on their mean at each rung, independently of timing), or FIFO (every trial
    runs all its epochs). Multi-worker trials cannot be paused (a paused Tune trial would leak its Train
    placement group, see `trainables.decisions`), so they keep Ray's ASHA, per trial, stopped at the end
    of an epoch: one ASHA per optimizer (`PerOptimizer`), so that a trial is judged only against trials
    of its own optimizer.

    One scheduler serves a whole study (one Tune experiment, trials labelled by `config["optimizer"]`):
    `configurations` and `seeds` are each optimizer's, `max_running` caps each optimizer's running
    trials, `optimizers` (optional: labels are also learned from the trials) gives the study's order of
    the optimizers, which the round-robin choice of the next trial to run follows."""
    if kind == "fifo":
        return FIFOScheduler()  # it judges nothing, so nothing to keep apart per optimizer
    if kind != "asha":
        raise ValueError(f"Unknown scheduler {kind!r}; valid: asha, fifo")
    if workers_per_trial == 1:
        return ConfigurationHalving(
            target, max_epochs, configurations, seeds, state_file=state_file, max_running=max_running
        )
    return PerOptimizer(functools.partial(asha_at_epoch_end, max_epochs), optimizers or ())


def asha_at_epoch_end(max_epochs: int) -> StopAtEpochEnd:
    """One optimizer's early stopping for multi-worker trials: Ray's ASHA, its STOPs delivered at the end
    of an epoch. Module-level (and bound with functools.partial) so that `PerOptimizer` pickles."""
    asha = ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_epochs,
        # The first rung after 1/8 of the epochs: early enough to save time, late enough that a slow
        # starter (a warmup schedule, SGD at a small LR) is not judged on its first epoch.
        grace_period=max(1, max_epochs // 8),
        reduction_factor=3,
    )
    return StopAtEpochEnd(asha)


class StopAtEpochEnd(TrialScheduler):
    """Delegates to `inner`, but turns its decisions for multi-worker trials into requests that the
    training loop honours at the end of the epoch it reported (it waits for each decision)."""

    def __init__(self, inner: TrialScheduler) -> None:
        super().__init__()
        self.inner = inner

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        channel = trial.config.get("settings", {}).get("scheduler_decisions")
        if channel is None or TIME_ATTR not in result:
            return decision
        decisions.create(channel).record.remote(trial.trial_id, int(result[TIME_ATTR]), decision == self.STOP)
        return self.CONTINUE

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string()
