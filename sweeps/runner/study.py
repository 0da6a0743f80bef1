"""Run an optimizer study on Ray Tune: one Tune experiment per optimizer, the same budget for each.

Layout: `<storage>/<name>/study.json` (the settings, to refuse a resume with different ones),
`<storage>/<name>/<optimizer>/` (Ray Tune's experiment of that optimizer's search), with a confirmation
stage `<storage>/<name>/confirmation.json` and `<storage>/<name>/<optimizer>-confirm/` (see
sweeps.runner.confirmation), and `<storage>/<name>/report/`.
Each optimizer gets its own Tuner, so its configurations compete only with each other under ASHA and
its searcher (random or Optuna TPE) spends exactly `num_samples` configurations x `seeds` trials.
Running the same command again resumes: finished trials are kept, unfinished ones continue from
their last checkpoint, a finished study just rewrites its report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator

from optsweep.errors import OptsweepError
from optsweep.sweeps.cluster import feasibility, interrupts, preflight, shipping, storage_guard
from optsweep.sweeps.cluster.storage_guard import StorageGuard
from optsweep.sweeps.early_stopping import halving
from optsweep.sweeps.early_stopping.scheduling import build_scheduler, halving_caps_running
from optsweep.sweeps.monitoring import tracking
from optsweep.sweeps.monitoring.progress import ProgressLine
from optsweep.sweeps.record import identity, reproduce, study_record
from optsweep.sweeps.runner import confirmation, fusion, safeguards, side_by_side
from optsweep.sweeps.search import contenders, spaces
from optsweep.sweeps.search.contenders import Contender
from optsweep.sweeps.spec import StudySpec, check_lr_range
from optsweep.trainables import decisions, tasks
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.tasks import Task
from optsweep.trainables.trial import run_trial, trial_resources
from optsweep.vocabulary import CONFIGURATION_KEY, MEMBERS_KEY, Target

STUDY_FILE = identity.STUDY_FILE
# A full, read-only or forbidden storage path, as Tune's own writes report it.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
LOCK_FILE = ".optsweep.lock"


def execute(plan: Plan, connection: tuple[str | None, str] | None = None) -> Path:
    """Run a prepared study to its report and return the report's directory; errors propagate (`main`
    turns them into one line and an exit code). `connection` is `safeguards.before_ray`'s answer."""
    args = plan.args
    address, source = connection if connection is not None else safeguards.before_ray(args)
    # Tune's rich console output (tables, banners) would drown the one progress line per optimizer.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns each time a trial's checkpoint forces an experiment snapshot (num_to_keep=2); with
    # epochs of a few milliseconds that is constantly, and it is expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    with (
        _nothing_left_if_it_fails_early(args),
        _exclusive(args),
        interrupts.StopOnSignal(hint=resume_hint(args)),
    ):
        if not args.is_remote_storage:
            storage_guard.check(args.experiment_dir, storage_guard.min_free_bytes())
        identity.record_or_check(args.experiment_dir, plan.identity())
        no_study_file = reproduce.write(args, plan.task, plan.contenders, task_is_named=plan.task_is_named)
        if no_study_file:
            print(f"No {reproduce.STUDY_YAML} (the study file that reruns this study): {no_study_file}.")
        _connect_ray(args, plan.user_code, address, source)
        _check_cluster(args)
        safeguards.check_feasible(args, joined=address is not None)
        tracking.for_study(args).active()  # its once-per-study checks, before the optimizers' threads
        _say_why_unfused(plan)
        # Every optimizer's stages at once, each in a thread (see sweeps.runner.side_by_side): its search,
        # then, once no other search waits for a slot, its confirmation (sweeps.runner.confirmation); the
        # first Ctrl-C (SIGUSR1, see sweeps.cluster.interrupts) or one optimizer's error stops them all
        # resumably.
        parallel = min(_optimizer_share(args), args.max_concurrent or args.confirm_seeds or 1)
        try:
            with interrupts.tune_running():
                side_by_side.run(
                    [
                        functools.partial(
                            confirmation.run_stages,
                            plan,
                            contender,
                            functools.partial(_run_optimizer, plan, contender),
                            parallel=parallel,
                        )
                        for contender in plan.contenders
                    ],
                    names=[contender.label for contender in plan.contenders],
                    pending_trials=_queue_share(args),
                )
        finally:
            confirmation.forget_searches(args)  # a rerun in this process starts afresh
        report_dir = _write_report(args)
        tracking.for_study(args).log_study(report_dir)
    return report_dir


def _say_why_unfused(plan: Plan) -> None:
    """One line per reason an optimizer trains unfused, naming the optimizers it holds for."""
    by_reason: dict[str, list[str]] = {}
    for label, decision in plan.fusion.items():
        if decision.reason and decision.reason != "--no-fuse":
            by_reason.setdefault(decision.reason, []).append(label)
    for reason, labels in by_reason.items():
        print(f"{', '.join(labels)} {'runs' if len(labels) == 1 else 'run'} unfused: {reason}", flush=True)


def resume_hint(args: StudySpec) -> str:
    return f"Run the same command again to resume {args.experiment_dir}."


def _queue_share(args: StudySpec) -> int | None:
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
    return _optimizer_share(args)


def _trial_slots(args: StudySpec) -> int:
    """How many trials the cluster's CPUs and GPUs hold at once."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1.0) // (args.cpus_per_worker * args.workers_per_trial or 1.0)
    if args.gpus_per_worker > 0:
        slots = min(slots, resources.get("GPU", 0.0) // (args.gpus_per_worker * args.workers_per_trial))
    return max(1, int(slots))


def _optimizer_share(args: StudySpec) -> int:
    """Each optimizer's equal share of the trial slots, ceil(slots / optimizers)."""
    return max(1, -(-_trial_slots(args) // len(args.labels)))


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
    sizes = {c.label: len(_space(args, c).grid()) for c in contenders_}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{label} {size}" for label, size in sizes.items())
        raise OptsweepError(
            f"a grid search gives every optimizer the same budget, but the grids differ in size ({listed}); "
            "give each optimizer a grid of the same size"
        )
    return next(iter(sizes.values()))


@contextlib.contextmanager
def _nothing_left_if_it_fails_early(args: StudySpec) -> Iterator[None]:
    """A run that fails before any optimizer's experiment exists (Ray unreachable, an infeasible trial)
    removes the directories it created: there is nothing to resume, and an empty experiment would only
    mislead. Anything that existed before the run, or any started experiment, is left as it is."""
    if args.is_remote_storage:
        yield
        return
    created = [p for p in (Path(args.storage_path), Path(args.experiment_dir)) if not p.exists()]
    try:
        yield
    except BaseException:
        if created and not study_record.started(args.experiment_dir):
            if Path(args.experiment_dir) in created:
                shutil.rmtree(args.experiment_dir, ignore_errors=True)
            if Path(args.storage_path) in created:
                with contextlib.suppress(OSError):
                    os.rmdir(args.storage_path)  # only if empty
        raise


@contextlib.contextmanager
def _exclusive(args: StudySpec) -> Iterator[None]:
    """Refuse a second sweep on the same experiment directory while one runs (local storage)."""
    if args.is_remote_storage:
        yield
        return
    directory = Path(args.experiment_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise OptsweepError(
                f"another sweep ({holder}) is running on {directory}; "
                "wait for it to finish or choose another --name"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _connect_ray(args: StudySpec, user_code: list[str], address: str | None, source: str) -> None:
    """Join `address` (checked by safeguards.before_ray) or start a local Ray, and say which."""
    if ray.is_initialized():  # e.g. a test session's Ray, or a notebook that started one
        shipping.pickle_by_value(user_code)
        return
    safeguards.connect(address, source, **shipping.runtime_env(user_code))
    if address is None:  # started here: its processes hear the signals sent to our process group
        interrupts.watch_local_ray(ray.get_runtime_context().gcs_address)


def _check_cluster(args: StudySpec) -> None:
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node["NodeManagerAddress"] for node in nodes}
    if len(hosts) > 1 and not args.is_remote_storage:
        raise OptsweepError(
            f"the Ray cluster spans {len(hosts)} hosts and Ray no longer syncs results to the head node, so "
            f"--storage-path {args.storage_path} must be shared storage (e.g. s3://bucket/optsweep)"
        )
    if args.decisions_channel is not None:
        decisions.create(args.decisions_channel)


def _run_optimizer(plan: Plan, contender: Contender) -> tune.ResultGrid:
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
            decisions=halving.StateFileDecisions(_halving_state(args, optimizer)),
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


def _tune_concurrency(args: StudySpec) -> int | None:
    """Tune's max_concurrent_trials: --max-concurrent, except under per-configuration halving, which caps
    the running trials itself (Tune's cap counts trials paused at a rung and would hang the sweep)."""
    return None if halving_caps_running(args) else args.max_concurrent


def _halving_state(args: StudySpec, optimizer: str) -> str:
    return f"{args.experiment_dir}/{optimizer}/{halving.STATE_FILE}"


def _fused_groups(plan: Plan, contender: Contender, settings: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The optimizer's fused groups (none when it runs unfused), at least as many as its share of the
    trial slots (within --max-concurrent)."""
    args = plan.args
    decision = plan.fusion.get(contender.label)
    if decision is None or not decision.fused:
        return []
    configurations = _configurations(_space(args, contender), args)
    return fusion.plan_groups(
        contender.label,
        configurations,
        args.seeds,
        settings,
        plan.task,
        decision.group_size,
        parallel=min(_optimizer_share(args), args.max_concurrent or len(configurations) * args.seeds),
    )


def _space(args: StudySpec, contender: Contender) -> spaces.SearchSpace:
    return spaces.space_for(
        contender.label,
        lr_range=args.lr_range(contender.label, contender.params),
        schedules=args.schedules,
        params=contender.params,
    )


def _new_tuner(
    plan: Plan,
    contender: Contender,
    trainable: Any,
    settings: dict[str, Any],
    groups: list[list[dict[str, Any]]],
) -> tune.Tuner:
    args, optimizer, target = plan.args, contender.label, plan.task.target
    space = _space(args, contender)
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
            points_to_evaluate=trials, max_concurrent=_tune_concurrency(args) or 0
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
                state_file=_halving_state(args, optimizer),
                max_running=args.max_concurrent,
            ),
            search_alg=searcher,
            num_samples=num_samples,
            # The random search's generator keeps the cap itself (Tune ignores this one beside it).
            max_concurrent_trials=(
                None if isinstance(searcher, BasicVariantGenerator) else _tune_concurrency(args)
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
            callbacks=_callbacks(args, optimizer, target),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def _callbacks(args: StudySpec, optimizer: str, target: Target) -> list[tune.Callback]:
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


def random_search_trials(space: spaces.SearchSpace, args: StudySpec) -> list[dict[str, Any]]:
    """Each trial's configuration, in full: configurations drawn up front and crossed with the seeds, so
    every seed of a configuration gets exactly the same hyperparameters."""
    configurations = _configurations(space, args)
    return [
        {**hyperparameters, CONFIGURATION_KEY: number, "seed": seed}
        for number, hyperparameters in enumerate(configurations)
        for seed in range(args.seeds)
    ]


def _configurations(space: spaces.SearchSpace, args: StudySpec) -> list[dict[str, Any]]:
    return spaces.configurations(space, search=args.search, n=args.num_samples, seed=args.search_seed)


def _optuna_search() -> type:
    from ray.tune.search.optuna import OptunaSearch  # imports optuna: only for a study that searches with it

    return OptunaSearch


def _write_report(args: StudySpec) -> Path:
    from optsweep import analysis  # pandas, scipy: the driver needs them only at the end

    if not args.is_remote_storage:
        return analysis.write_report(args.experiment_dir)
    import tempfile

    import pyarrow.fs

    local = Path(tempfile.mkdtemp(prefix="optsweep-report-")) / args.name
    pyarrow.fs.copy_files(args.experiment_dir, str(local))
    report_dir = analysis.write_report(local)
    pyarrow.fs.copy_files(str(report_dir), f"{args.experiment_dir}/report")
    return report_dir
