"""One optimizer's Tune experiment in a study: its trainable, searcher, scheduler and callbacks, and its
share of the cluster beside the other optimizers' experiments (see `sweeps.runner.study`)."""

from __future__ import annotations

import functools
from typing import Any

import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator

from optsweep.sweeps.cluster import feasibility, interrupts, storage_guard
from optsweep.sweeps.cluster.storage_guard import StorageGuard
from optsweep.sweeps.early_stopping import halving
from optsweep.sweeps.early_stopping.scheduling import build_scheduler, halving_caps_running
from optsweep.sweeps.monitoring import tracking
from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.sweeps.runner import confirmation, fusion, safeguards
from optsweep.sweeps.runner.plan import Plan, draw_configurations, random_search_trials, search_space
from optsweep.sweeps.search import spaces
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.trial import run_trial, trial_resources
from optsweep.vocabulary import MEMBERS_KEY, Target


def run_optimizer(plan: Plan, contender: Contender) -> tune.ResultGrid:
    args, optimizer = plan.args, contender.label
    path = f"{args.experiment_dir}/{optimizer}"
    settings = args.settings()
    if contender.reference != contender.label:
        settings["optimizer_class"] = contender.reference
    config = TrainConfig(optimizer=optimizer, **settings)
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial,
            task=plan.task,
            optimizer=contender.cls,
            run_settings=safeguards.run_settings(args),
            # Fused groups learn the per-configuration decisions from the scheduler's state file.
            decisions=halving.StateFileDecisions(halving_state(args, optimizer)),
        ),
        trial_resources(config),
    )
    if tune.Tuner.can_restore(path) and safeguards.prepare_restore(args, optimizer, trial_resources(config)):
        print(
            f"Resuming {optimizer} in {path}: finished trials are kept, unfinished ones continue.", flush=True
        )
        # Errored trials resume from their last checkpoint too: the error may have been the storage or a
        # lost node, fixed since; a trial that fails for good fails again within its max_failures.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        safeguards.restored(tuner, args)
    else:
        groups = _fused_groups(plan, contender, settings)
        layout = f" in {len(groups)} fused group(s) of up to {max(map(len, groups))}" if groups else ""
        print(
            f"Starting {optimizer}: {args.num_samples} configurations x {args.seeds} seeds = "
            f"{args.trials_per_optimizer} trials{layout}, up to {args.max_epochs} epochs each.",
            flush=True,
        )
        tuner = _new_tuner(plan, contender, trainable, settings, groups)
        safeguards.created(args, optimizer)
    with interrupts.tune_running():
        return tuner.fit()


def queue_share(args: StudySpec) -> int | None:
    """The optimizers' equal share of the cluster, as Ray Tune allows it: each optimizer's experiment keeps
    at most ceil(slots / optimizers) trials waiting for resources (slots: the trials the cluster's CPUs
    and GPUs hold at once), so the optimizers' first trials queue together and freed slots go to them in
    turn. Not a cap on running trials: Tune's `max_concurrent_trials` counts trials paused at a rung,
    which per-configuration halving keeps until every configuration has reached it (a cap below the
    trials per optimizer deadlocks), and an optimizer whose trial ends goes on in its actor (actor
    reuse) while it has trials to start. None (Tune's own queue of up to 200 trials each) on an autoscaling
    cluster: the queued trials are what makes the autoscaler add nodes."""
    if feasibility.snapshot(local=True).autoscaling:
        return None
    return optimizer_share(args)


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
    """Tune's max_concurrent_trials: --max-concurrent, except under per-configuration halving, which caps
    the running trials itself (Tune's cap counts trials paused at a rung and would hang the sweep)."""
    return None if halving_caps_running(args) else args.max_concurrent


def halving_state(args: StudySpec, optimizer: str) -> str:
    return f"{args.experiment_dir}/{optimizer}/{halving.STATE_FILE}"


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


def _new_tuner(
    plan: Plan,
    contender: Contender,
    trainable: Any,
    settings: dict[str, Any],
    groups: list[list[dict[str, Any]]],
) -> tune.Tuner:
    args, optimizer, target = plan.args, contender.label, plan.task.target
    space = search_space(args, contender)
    if groups:
        searcher = None
        param_space = {
            "optimizer": optimizer,
            # The groups themselves, not a function of a group number: Tune does not resolve a sample_from
            # function for trials it creates after a restore (their config keeps the placeholder).
            MEMBERS_KEY: tune.grid_search(groups),
            "settings": settings,
        }
        num_samples = 1
    elif args.search == "optuna":
        constants = {"optimizer": optimizer, "settings": settings}
        searcher = halving.SeedRepeater(
            _optuna_search()(
                space=functools.partial(_define_by_run, space, constants),
                # The seeds' best so far where their configuration stopped: what early stopping judged.
                metric=target.best_key,
                mode=target.mode,
                seed=args.search_seed,
            ),
            repeat=args.seeds,
            set_index=True,
        )
        param_space: dict[str, Any] = {}
        num_samples = args.trials_per_optimizer
    else:
        # Every (configuration, seed) trial spelled out with its values, none left for Tune to resolve:
        # Tune does not resolve a sample_from function for trials it creates after a restore (their config
        # keeps the placeholder ["__fn_ph", hash]), and it creates trials lazily, so a Ctrl-C in the first
        # seconds left most of them to be created after the restore.
        trials = random_search_trials(space, args)
        searcher = BasicVariantGenerator(
            points_to_evaluate=trials, max_concurrent=tune_concurrency(args) or 0
        )
        # Tune wants every preset key in the space; each trial takes its own value from its point.
        values = {key: tune.choice(list(dict.fromkeys(t[key] for t in trials))) for key in trials[0]}
        param_space = {"optimizer": optimizer, **values, "settings": settings}
        num_samples = len(trials)
    return tune.Tuner(
        trainable,
        param_space=param_space,
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
                state_file=halving_state(args, optimizer),
                max_running=args.max_concurrent,
            ),
            search_alg=searcher,
            num_samples=num_samples,
            # The random search's generator keeps the cap itself (Tune ignores this one beside it).
            max_concurrent_trials=(
                None if isinstance(searcher, BasicVariantGenerator) else tune_concurrency(args)
            ),
            # A fresh trial process re-imports torch (seconds); single-worker trials reuse their actors.
            reuse_actors=args.workers_per_trial == 1,
        ),
        run_config=tune.RunConfig(
            name=optimizer,
            storage_path=args.experiment_dir,
            verbose=0,
            log_to_file=True,
            # Trial stdout/stderr (e.g. "checkpoint ... is unusable; resuming from ...") land in the trial's
            # directory in storage, not only on the node that ran it.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=callbacks(args, optimizer, target),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def callbacks(args: StudySpec, optimizer: str, target: Target) -> list[tune.Callback]:
    callbacks: list[tune.Callback] = [
        ProgressLine(
            f"{optimizer} search" if args.confirm_seeds else optimizer,
            args.trials_per_optimizer,  # a fused group counts as its members
            max_epochs=args.max_epochs,
            position=(args.labels.index(optimizer) + 1, len(args.labels)),
            target=target,
        )
    ]
    if not args.is_remote_storage:
        callbacks.append(StorageGuard(args.experiment_dir, storage_guard.min_free_bytes()))
    callbacks += tracking.for_study(args).callbacks()
    callbacks += safeguards.callbacks(args, optimizer)
    callbacks.append(confirmation.SearchWaiting(args.experiment_dir, optimizer))
    return callbacks


def _define_by_run(space: spaces.SearchSpace, constants: dict[str, Any], trial: Any) -> dict[str, Any]:
    # Repeater asks once per configuration, so Optuna's trial number numbers the configurations (what
    # per-configuration early stopping groups the seeds by).
    return {**space.suggest(trial), **constants, halving.CONFIGURATION_KEY: trial.number}


def _optuna_search() -> type:
    from ray.tune.search.optuna import OptunaSearch  # imports optuna: only for a study that searches with it

    return OptunaSearch
