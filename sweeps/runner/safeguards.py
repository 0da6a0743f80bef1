"""The study's checks around Ray, in the order the study calls them (see `sweeps.runner.study.execute`).

Each check ends a doomed run with one line (an `OptsweepError`: the command line prints it and exits 2)
before the work it would waste; the modules named in each function do the actual work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import tune

from optsweep.sweeps import _ray_compat
from optsweep.sweeps.cluster import feasibility, interrupts, ray_connect, retention, storage_guard
from optsweep.sweeps.early_stopping import halving
from optsweep.sweeps.early_stopping.per_optimizer import optimizer_label
from optsweep.sweeps.record import resume, trust
from optsweep.sweeps.search.study_search import PerOptimizerSearch
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import faults


def before_ray(args: StudySpec) -> tuple[str | None, str]:
    """Checks that need nothing but the arguments; returns the Ray address to join (None: local)."""
    storage_guard.min_free_bytes()  # a bad OPTSWEEP_MIN_FREE_MB is a usage error, not a storage one
    feasibility.wait_note_seconds()
    if not args.is_remote_storage and not args.trust_storage:
        trust.check_local_permissions(args.experiment_dir)
    return ray_connect.resolve_address(args.address)


def run_settings(args: StudySpec) -> dict[str, Any]:
    """This run's run-time settings, which every trial uses even if it was stored with others."""
    settings = args.settings()
    return {key: settings[key] for key in resume.RUN_SETTINGS if key in settings}


def connect(address: str | None, source: str, **init_kwargs: Any) -> None:
    print(ray_connect.connect(address, source, **init_kwargs), flush=True)
    interrupts.reclaim()


def check_feasible(args: StudySpec, joined: bool) -> None:
    cluster = feasibility.snapshot(local=not joined)
    feasibility.check(cluster, args.workers_per_trial, args.cpus_per_worker, args.gpus_per_worker)


def prepare_restore(args: StudySpec, experiment: str, resources: dict[str, float]) -> bool:
    """Before `Tuner.restore` of the study's experiment `experiment` (`layout.SEARCH`, `layout.CONFIRM`):
    repair or refuse damage, refuse a `tuner.pkl` this study did not write, and give unfinished trials this
    run's resources. False: nothing had run, start afresh."""
    path = f"{args.experiment_dir}/{experiment}"
    plan = resume.prepare_restore(path, experiment)
    for note in plan.notes:
        print(f"  {note}", flush=True)
    if not plan.restore:
        return False
    trust.check(args.experiment_dir, experiment, args.trust_storage)
    if args.is_remote_storage:
        print(
            "  (on remote storage, trials already created keep their stored Tune resource request; their "
            "settings follow this run)",
            flush=True,
        )
        return True
    changed = resume.apply_run_settings(path, args.settings(), resources)
    if changed:
        print(
            f"  {len(changed)} unfinished trial(s) resume with this run's resources and data directory "
            f"({demand_text(args)} per trial)",
            flush=True,
        )
    for trial_id in resume.repair_checkpoint_references(path):
        print(
            f"  trial {trial_id}: its last snapshot names a deleted checkpoint; it resumes from its "
            "newest one instead",
            flush=True,
        )
    return True


def restored(tuner: Any, args: StudySpec) -> None:
    """After `Tuner.restore`: this run's --max-concurrent (Tune restores the stored TuneConfig, with its
    scheduler and searcher; Ray 2.60 has no public way to change it, so the restored Tuner's config is
    updated in place)."""
    config = _ray_compat.restored_tune_config(tuner)
    if config is None:
        if args.max_concurrent is not None:
            print("  note: --max-concurrent cannot be changed on resume through Ray Client", flush=True)
        return
    if isinstance(config.scheduler, halving.ConfigurationHalving):
        config.scheduler.max_running = args.max_concurrent
        live = None  # the halving caps the running trials itself, see tuner.tune_concurrency
    else:
        live = args.max_concurrent
    if isinstance(config.search_alg, PerOptimizerSearch):
        config.search_alg.max_live = live


def created(args: StudySpec, experiment: str) -> None:
    """After a new Tuner wrote its `tuner.pkl`: pin it for later resumes."""
    trust.pin(args.experiment_dir, experiment)


class _FaultPoints(tune.Callback):
    """The fault-tolerance tests' driver signals (`trainables.faults.signal_marker`), counted per
    optimizer (a marker may wait for every optimizer to have some results)."""

    def __init__(self, study: str, optimizers: int) -> None:
        self.study, self.optimizers = study, optimizers

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        faults.count_result(self.study, optimizer_label(trial), self.optimizers)


def callbacks(args: StudySpec, forecast_trials: int | None = None) -> list[Any]:
    """The checks that watch an experiment of the study; `forecast_trials`: the trials whose checkpoints the
    disk must hold (the search's, forecast once as it starts; None: no forecast)."""
    found: list[Any] = [
        retention.KeepCheckpoints(args.keep_checkpoints),
        feasibility.WaitingForResources(demand_text(args), feasibility.wait_note_seconds()),
    ]
    if os.environ.get(faults.ENV):
        found.append(_FaultPoints(args.experiment_dir, len(args.labels)))
    if not args.is_remote_storage and forecast_trials is not None:
        existing = retention.checkpoint_size(Path(args.experiment_dir))
        if existing is not None:
            retention.warn_if_short(
                args.experiment_dir, existing, forecast_trials, _running_guess(args), args.keep_checkpoints
            )
        else:
            found.append(retention.DiskForecast(args.experiment_dir, forecast_trials, args.keep_checkpoints))
    return found


def _running_guess(args: StudySpec) -> int:
    return args.max_concurrent or os.cpu_count() or 1


def demand_text(args: StudySpec) -> str:
    per_worker = ", ".join(
        f"{value:g} {name}"
        for name, value in (("CPU", args.cpus_per_worker), ("GPU", args.gpus_per_worker))
        if value > 0
    )
    return per_worker if args.workers_per_trial == 1 else f"{args.workers_per_trial} workers x {per_worker}"
