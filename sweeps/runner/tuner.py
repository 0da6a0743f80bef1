"""The study's search as one Tune experiment, every optimizer's trials in it, and what the study's Tune
experiments share (the trainable, the run config, the callbacks, `fit`); see `sweeps.runner.study`.

The optimizer is a dimension of the trials (`config["optimizer"]`), as Ray's own examples make any
categorical choice. Each optimizer keeps its own budget and its own search: `PerOptimizerSearch` gives each
exactly its configurations x seeds, from its own searcher (the configurations drawn up front, its fused
groups, or its own Optuna study), creating trials round-robin over the optimizers; the scheduler decides
early stopping per optimizer (`sweeps.early_stopping`). So the optimizers share the cluster for the same
time, and Ctrl-C, resume and the graceful stop are Tune's own, in the main thread.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray import tune
from ray.tune.search import Searcher

from optsweep.sweeps.cluster import feasibility, interrupts, storage_guard
from optsweep.sweeps.cluster.storage_guard import StorageGuard
from optsweep.sweeps.early_stopping import halving
from optsweep.sweeps.early_stopping.scheduling import build_scheduler, halving_caps_running
from optsweep.sweeps.monitoring import tracking
from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.sweeps.record import layout
from optsweep.sweeps.runner import fusion, safeguards
from optsweep.sweeps.runner.plan import Plan, draw_configurations, random_search_trials, search_space
from optsweep.sweeps.search import spaces
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.search.study_search import PerOptimizerSearch, PresetTrials
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.trial import run_trial, trial_resources
from optsweep.vocabulary import MEMBERS_KEY, Target

PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
AUTOSCALING_QUEUE = 200  # Tune's own queue for its random search: enough to show the autoscaler the demand


def run_search(plan: Plan) -> None:
    """The study's search: one Tune experiment (`<experiment>/search/`) whose trials are every optimizer's
    configurations x seeds, `config["optimizer"]` naming each trial's optimizer. Created, or resumed when
    a run of the same study left it (finished trials are kept, unfinished ones continue)."""
    args = plan.args
    trainable = study_trainable(plan, decisions=halving.StateFileDecisions(halving_state(args)))

    def create() -> tune.Tuner:
        searchers: dict[str, Searcher] = {}
        counts: dict[str, int] = {}
        for contender in plan.contenders:
            searchers[contender.label], counts[contender.label], grouping = _optimizer_search(plan, contender)
            print(
                f"Starting {contender.label}: {args.num_samples} configurations x {args.seeds} seeds = "
                f"{args.trials_per_optimizer} trials{grouping}, up to {args.max_epochs} epochs each.",
                flush=True,
            )
        searcher = PerOptimizerSearch(searchers, counts, max_live=tune_concurrency(args))
        return _new_tuner(plan, trainable, searcher, sum(counts.values()))

    run_experiment(plan, layout.SEARCH, trainable, create)


def run_experiment(
    plan: Plan, name: str, trainable: Any, create: Callable[[], tune.Tuner]
) -> tune.ResultGrid:
    """Fit the study's experiment `name` (`layout.SEARCH`, `layout.CONFIRM`): resumed when a run of the same
    study left it (finished trials are kept, unfinished ones continue), else made by `create` and pinned
    for later resumes."""
    args = plan.args
    path = f"{args.experiment_dir}/{name}"
    if tune.Tuner.can_restore(path) and safeguards.prepare_restore(args, name, resources(plan)):
        stage = layout.STAGE_NAMES[name]
        print(
            f"Resuming the {stage} in {path}: finished trials are kept, unfinished ones continue.", flush=True
        )
        # Errored trials resume from their last checkpoint too: the error may have been the storage or a
        # lost node, fixed since; a trial that fails for good fails again within its max_failures.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        safeguards.restored(tuner, args)
    else:
        tuner = create()
        safeguards.created(args, name)
    return fit(tuner, args)


def study_trainable(plan: Plan, decisions: Any = None) -> Any:
    """The trainable of a study's experiments: `run_trial` with the task, the user's optimizer classes by
    label, this run's settings and (fused groups) the early-stopping decisions, reserving a trial's
    resources."""
    return tune.with_resources(
        tune.with_parameters(
            run_trial,
            task=plan.task,
            optimizers={c.label: c.cls for c in plan.contenders if c.cls is not None},
            run_settings=safeguards.run_settings(plan.args),
            decisions=decisions,
        ),
        resources(plan),
    )


def resources(plan: Plan) -> dict[str, float]:
    """What each trial of the study reserves (the same for every optimizer)."""
    contender = plan.contenders[0]
    return trial_resources(TrainConfig(optimizer=contender.label, **trial_settings(plan.args, contender)))


def trial_settings(args: StudySpec, contender: Contender, **overrides: Any) -> dict[str, Any]:
    """The `settings` of a trial of `contender` (a user's optimizer is named by its import path)."""
    settings = {**args.settings(), **overrides}
    if contender.reference != contender.label:
        settings["optimizer_class"] = contender.reference
    return settings


def fit(tuner: tune.Tuner, args: StudySpec) -> tune.ResultGrid:
    """`tuner.fit()` in the main thread, stopped resumably by the study's first Ctrl-C (Tune's own graceful
    stop, see `sweeps.cluster.interrupts`), with Tune's queue of trials waiting for resources kept to the
    cluster's share (see `queue_share`)."""
    with _pending_trials(queue_share(args)), interrupts.tune_running():
        return tuner.fit()


@contextlib.contextmanager
def _pending_trials(count: int) -> Iterator[None]:
    if PENDING_TRIALS_ENV in os.environ:
        yield
        return
    os.environ[PENDING_TRIALS_ENV] = str(count)
    try:
        yield
    finally:
        os.environ.pop(PENDING_TRIALS_ENV, None)


def queue_share(args: StudySpec) -> int:
    """How many trials Tune keeps waiting for resources (its `TUNE_MAX_PENDING_TRIALS_PG`): as many as the
    cluster runs at once. The searcher creates trials round-robin over the optimizers and Tune starts the
    waiting trials in the order they were created, so the first trials fill the cluster in equal shares
    and each freed slot goes to the next optimizer in turn (Tune's own queue for a searcher is one trial:
    the cluster would fill one trial per step of its loop). On an autoscaling cluster the queue is what
    makes the autoscaler add nodes, so it is long there."""
    if feasibility.snapshot(local=True).autoscaling:
        return AUTOSCALING_QUEUE
    return trial_slots(args)


def trial_slots(args: StudySpec) -> int:
    """How many trials the cluster's CPUs and GPUs hold at once."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1.0) // (args.cpus_per_worker * args.workers_per_trial or 1.0)
    if args.gpus_per_worker > 0:
        slots = min(slots, resources.get("GPU", 0.0) // (args.gpus_per_worker * args.workers_per_trial))
    return max(1, int(slots))


def optimizer_share(args: StudySpec) -> int:
    """Each optimizer's equal share of the trial slots, ceil(slots / optimizers)."""
    return max(1, -(-trial_slots(args) // len(args.labels)))


def tune_concurrency(args: StudySpec) -> int | None:
    """The searcher's cap on each optimizer's live trials: --max-concurrent, except under per-configuration
    halving, which caps the running trials itself (a cap on live trials counts trials paused at a rung,
    which wait for the others, and would hang the sweep)."""
    return None if halving_caps_running(args) else args.max_concurrent


def halving_state(args: StudySpec) -> str:
    """The per-configuration halving's state file: in the study's directory, not in its Tune experiment's.
    On a restore Tune copies the .json files at the top of its experiment directory to a staging directory
    and uploads them back at every snapshot, which would put the restore's copy of the file back over the
    decisions made since (measured: a resumed study's rung decisions were lost, and fused groups, which
    read them from the file, trained eliminated members on)."""
    return f"{args.experiment_dir}/{halving.STATE_FILE}"


def _optimizer_search(plan: Plan, contender: Contender) -> tuple[Searcher, int, str]:
    """An optimizer's searcher in the study's, how many trials it creates, and how they are grouped (for
    the start line): its fused groups, its configurations x seeds spelled out, or Optuna's suggestions."""
    args, label = plan.args, contender.label
    settings = trial_settings(args, contender)
    space = search_space(args, contender)
    groups = _fused_groups(plan, contender, settings)
    if groups:
        configs = [{"optimizer": label, MEMBERS_KEY: group, "settings": settings} for group in groups]
        grouping = f" in {len(groups)} fused group(s) of up to {max(map(len, groups))}"
        return PresetTrials(configs), len(configs), grouping
    if args.search == "optuna":
        constants = {"optimizer": label, "settings": settings}
        optuna = _optuna_search()(
            space=functools.partial(_define_by_run, space, constants),
            # The seeds' best so far where their configuration stopped: what early stopping judged.
            metric=plan.task.target.best_key,
            mode=plan.task.target.mode,
            seed=args.search_seed,
        )
        return halving.SeedRepeater(optuna, repeat=args.seeds, set_index=True), args.trials_per_optimizer, ""
    # Every (configuration, seed) trial spelled out with its values, none left for Tune to resolve: Tune
    # does not resolve a sample_from function for trials it creates after a restore.
    configs = [
        {"optimizer": label, **trial, "settings": settings} for trial in random_search_trials(space, args)
    ]
    return PresetTrials(configs), len(configs), ""


def _fused_groups(plan: Plan, contender: Contender, settings: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The optimizer's fused groups (none when it runs unfused), at least as many as its share of the
    trial slots (within --max-concurrent)."""
    args = plan.args
    decision = plan.fusion.get(contender.label)
    if decision is None or not decision.fused:
        return []
    configurations = draw_configurations(search_space(args, contender), args)
    return fusion.plan_groups(
        contender.label,
        configurations,
        args.seeds,
        settings,
        plan.task,
        decision.group_size,
        parallel=min(optimizer_share(args), args.max_concurrent or len(configurations) * args.seeds),
    )


def _new_tuner(plan: Plan, trainable: Any, searcher: PerOptimizerSearch, trials: int) -> tune.Tuner:
    args, target = plan.args, plan.task.target
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=target.key,
            mode=target.mode,
            scheduler=build_scheduler(
                args.scheduler,
                args.max_epochs,
                args.workers_per_trial,
                target=target,
                configurations=args.num_samples,
                seeds=args.seeds,
                state_file=halving_state(args),
                max_running=args.max_concurrent,
                optimizers=args.labels,
            ),
            search_alg=searcher,
            num_samples=trials,
            # A fresh trial process re-imports torch (seconds); single-worker trials reuse their actors.
            reuse_actors=args.workers_per_trial == 1,
        ),
        run_config=run_config(args, layout.SEARCH, callbacks(args, target)),
    )


def run_config(args: StudySpec, name: str, callbacks: list[tune.Callback]) -> tune.RunConfig:
    """The RunConfig of the study's experiment `name` (`layout.SEARCH` or `layout.CONFIRM`)."""
    return tune.RunConfig(
        name=name,
        storage_path=args.experiment_dir,
        verbose=0,
        log_to_file=True,
        # Trial stdout/stderr (e.g. "checkpoint ... is unusable; resuming from ...") land in the trial's
        # directory in storage, not only on the node that ran it.
        sync_config=tune.SyncConfig(sync_artifacts=True),
        callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=2),
    )


def callbacks(args: StudySpec, target: Target) -> list[tune.Callback]:
    """The search's callbacks: a progress line per optimizer, the storage guard, trackers, safeguards."""
    return [
        *progress_lines(
            args, target, stage=layout.SEARCH, totals=dict.fromkeys(args.labels, args.trials_per_optimizer)
        ),
        *stage_callbacks(args),
        *safeguards.callbacks(args, args.trials_per_optimizer * len(args.labels)),
    ]


def progress_lines(
    args: StudySpec, target: Target, *, stage: str, totals: dict[str, int]
) -> list[ProgressLine]:
    """One progress line per optimizer of the experiment (a fused group counts as its members)."""
    stage_word = "search" if stage == layout.SEARCH else "confirm"
    return [
        ProgressLine(
            f"{label} {stage_word}" if args.confirm_seeds else label,
            total,
            optimizer=label,
            max_epochs=args.max_epochs,
            position=(args.labels.index(label) + 1, len(args.labels)),
            target=target,
        )
        for label, total in totals.items()
    ]


def stage_callbacks(args: StudySpec) -> list[tune.Callback]:
    """What every experiment of the study watches: free storage, and the study's trackers."""
    found: list[tune.Callback] = []
    if not args.is_remote_storage:
        found.append(StorageGuard(args.experiment_dir, storage_guard.min_free_bytes()))
    return found + tracking.for_study(args).callbacks()


def _define_by_run(space: spaces.SearchSpace, constants: dict[str, Any], trial: Any) -> dict[str, Any]:
    # Repeater asks once per configuration, so Optuna's trial number numbers the configurations (what
    # per-configuration early stopping groups the seeds by).
    return {**space.suggest(trial), **constants, halving.CONFIGURATION_KEY: trial.number}


def _optuna_search() -> type:
    from ray.tune.search.optuna import OptunaSearch  # imports optuna: only for a study that searches with it

    return OptunaSearch
