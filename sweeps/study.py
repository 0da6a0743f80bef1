"""Run an optimizer study on Ray Tune: one Tune experiment per optimizer, the same budget for each.

Layout: `<storage>/<name>/study.json` (the settings, to refuse a resume with different ones),
`<storage>/<name>/<optimizer>/` (Ray Tune's experiment of that optimizer) and `<storage>/<name>/report/`.
Each optimizer gets its own Tuner, so its configurations compete only with each other under ASHA and
its searcher (random or Optuna TPE) spends exactly `num_samples` configurations x `seeds` trials.
Running the same command again resumes: finished trials are kept, unfinished ones continue from
their last checkpoint, a finished study just rewrites its report.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

import analysis
from trainables import data, decisions
from trainables.config import TrainConfig
from trainables.trial import run_trial, trial_resources

from . import cli, resume, spaces, storage_guard
from .progress import ProgressLine
from .scheduling import METRIC, MODE, build_scheduler
from .storage_guard import StorageError, StorageGuard

# Settings that define a study: a rerun with other values would mix two studies in one directory.
IDENTITY_FIELDS = (
    "optimizers",
    "num_samples",
    "seeds",
    "max_epochs",
    "dataset",
    "model",
    "batch_size",
    "schedules",
    "lr_min",
    "lr_max",
    "scheduler",
    "search",
    "search_seed",
    "workers_per_trial",
)
STUDY_FILE = "study.json"
# A full, read-only or forbidden storage path, as Tune's own writes report it.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
LOCK_FILE = ".optsweep.lock"


def main(argv: list[str] | None, *, prog: str, description: str, defaults: cli.StudyArgs) -> int:
    """Parse, validate, run the study, write its report; returns the process exit code."""
    try:
        args = cli.parse(argv, prog, description, defaults)
        _check_dataset(args)
    except ValueError as error:  # UsageError, DatasetUnavailableError
        return cli.fail(str(error))
    # Tune's rich console output (tables, banners) would drown the one progress line per optimizer.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune warns each time a trial's checkpoint forces an experiment snapshot (num_to_keep=2); with
    # epochs of a few milliseconds that is constantly, and it is expected here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = time.monotonic()
    try:
        with _exclusive(args):
            if not args.is_remote_storage:
                storage_guard.check(args.experiment_dir, storage_guard.min_free_bytes())
            _record_or_check_study(args)
            _connect_ray(args)
            _check_cluster(args)
            for optimizer in args.optimizers:
                _run_optimizer(args, optimizer)
            report_dir = _write_report(args)
    except cli.UsageError as error:
        return cli.fail(str(error))
    except (StorageError, OSError) as error:
        if isinstance(error, OSError) and error.errno not in STORAGE_ERRNOS:
            raise
        message = str(error) if isinstance(error, StorageError) else f"storage error: {error}"
        print(
            f"error: {message}; the experiment is left resumable: fix the storage, then run the same command "
            "again",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"\nInterrupted. Run the same command again to resume {args.experiment_dir}.", file=sys.stderr)
        return 130
    _print_summary(report_dir, time.monotonic() - started)
    return 0


def _check_dataset(args: cli.StudyArgs) -> None:
    """Fail before Ray starts if the dataset is missing (and cannot be downloaded)."""
    data.load_splits(args.dataset, args.data_dir)


@contextlib.contextmanager
def _exclusive(args: cli.StudyArgs) -> Iterator[None]:
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
            raise cli.UsageError(
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


def _record_or_check_study(args: cli.StudyArgs) -> None:
    """Write study.json on the first run; on a rerun, insist on the same study settings."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(args.experiment_dir)
    path = f"{root}/{STUDY_FILE}"
    identity = {key: _jsonable(getattr(args, key)) for key in IDENTITY_FIELDS}
    if fs.get_file_info(path).type == pyarrow.fs.FileType.File:
        with fs.open_input_stream(path) as f:
            recorded = json.loads(f.read().decode())
        changed = [key for key in IDENTITY_FIELDS if recorded.get(key) != identity[key]]
        if changed:
            details = ", ".join(f"{k} {recorded.get(k)!r} -> {identity[k]!r}" for k in changed)
            raise cli.UsageError(
                f"{args.experiment_dir} holds a study with other settings ({details}); rerun it with its own "
                "flags to resume it, or choose another --name"
            )
        return
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(json.dumps({**identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2).encode())


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _connect_ray(args: cli.StudyArgs) -> None:
    if ray.is_initialized():  # e.g. a test session's Ray, or a notebook that started one
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if args.address:
        ray.init(address=args.address, **quiet)
    else:
        # Local: the dashboard stays off (anyone who reaches a Ray port can run code).
        ray.init(include_dashboard=False, **quiet)


def _check_cluster(args: cli.StudyArgs) -> None:
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node["NodeManagerAddress"] for node in nodes}
    if len(hosts) > 1 and not args.is_remote_storage:
        raise cli.UsageError(
            f"the Ray cluster spans {len(hosts)} hosts and Ray no longer syncs results to the head node, so "
            f"--storage-path {args.storage_path} must be shared storage (e.g. s3://bucket/optsweep)"
        )
    needed = args.gpus_per_worker * args.workers_per_trial
    available = ray.cluster_resources().get("GPU", 0)
    if needed > available:
        if args.address is None:
            raise cli.UsageError(f"each trial needs {needed:g} GPUs but the local Ray has {available:g}")
        print(
            f"Note: each trial needs {needed:g} GPUs and the cluster has {available:g} now; trials wait "
            "until the autoscaler adds GPU nodes.",
            flush=True,
        )
    if args.decisions_channel is not None:
        decisions.create(args.decisions_channel)


def _run_optimizer(args: cli.StudyArgs, optimizer: str) -> tune.ResultGrid:
    path = f"{args.experiment_dir}/{optimizer}"
    settings = args.settings()
    config = TrainConfig(optimizer=optimizer, **settings)
    trainable = tune.with_resources(run_trial, trial_resources(config))
    if tune.Tuner.can_restore(path):
        print(
            f"Resuming {optimizer} in {path}: finished trials are kept, unfinished ones continue.", flush=True
        )
        if not args.is_remote_storage:
            for trial_id in resume.repair_checkpoint_references(path):
                print(
                    f"  trial {trial_id}: its last snapshot names a deleted checkpoint; it resumes from its "
                    "newest one instead",
                    flush=True,
                )
        # Errored trials resume from their last checkpoint too: the error may have been the storage or a
        # lost node, fixed since; a trial that fails for good fails again within its max_failures.
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        print(
            f"Starting {optimizer}: {args.num_samples} configurations x {args.seeds} seeds = "
            f"{args.trials_per_optimizer} trials, up to {args.max_epochs} epochs each.",
            flush=True,
        )
        tuner = _new_tuner(args, optimizer, trainable, settings)
    return tuner.fit()


def _new_tuner(args: cli.StudyArgs, optimizer: str, trainable: Any, settings: dict[str, Any]) -> tune.Tuner:
    space = spaces.space_for(optimizer, lr_range=args.lr_range(optimizer), schedules=args.schedules)
    if args.search == "optuna":
        constants = {"optimizer": optimizer, "settings": settings}
        searcher = Repeater(
            OptunaSearch(
                space=functools.partial(_define_by_run, space, constants),
                metric=METRIC,
                mode=MODE,
                seed=args.search_seed,
            ),
            repeat=args.seeds,
            set_index=True,
        )
        param_space: dict[str, Any] = {}
        num_samples = args.trials_per_optimizer
    else:
        searcher = None
        param_space = _random_search_space(space, args, settings)
        num_samples = 1  # the grid below already holds every (configuration, seed) pair
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            scheduler=build_scheduler(args.scheduler, args.max_epochs, args.workers_per_trial),
            search_alg=searcher,
            num_samples=num_samples,
            max_concurrent_trials=args.max_concurrent,
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
            callbacks=_callbacks(args, optimizer),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    )


def _callbacks(args: cli.StudyArgs, optimizer: str) -> list[tune.Callback]:
    callbacks: list[tune.Callback] = [ProgressLine(optimizer, args.trials_per_optimizer)]
    if not args.is_remote_storage:
        callbacks.append(StorageGuard(args.experiment_dir, storage_guard.min_free_bytes()))
    return callbacks


def _define_by_run(space: spaces.SearchSpace, constants: dict[str, Any], trial: Any) -> dict[str, Any]:
    return {**space.suggest(trial), **constants}


def _random_search_space(
    space: spaces.SearchSpace, args: cli.StudyArgs, settings: dict[str, Any]
) -> dict[str, Any]:
    """Configurations drawn up front and crossed with the seeds: every seed of a configuration gets
    exactly the same hyperparameters."""
    configurations = spaces.sample_configurations(space, args.num_samples, args.search_seed)
    return {
        "optimizer": space.optimizer,
        "__configuration": tune.grid_search(list(range(args.num_samples))),
        "seed": tune.grid_search(list(range(args.seeds))),
        **{key: tune.sample_from(functools.partial(_pick, configurations, key)) for key in configurations[0]},
        "settings": settings,
    }


def _pick(configurations: list[dict[str, Any]], key: str, config: dict[str, Any]) -> Any:
    return configurations[config["__configuration"]][key]


def _write_report(args: cli.StudyArgs) -> Path:
    if not args.is_remote_storage:
        return analysis.write_report(args.experiment_dir)
    import tempfile

    import pyarrow.fs

    local = Path(tempfile.mkdtemp(prefix="optsweep-report-")) / args.name
    pyarrow.fs.copy_files(args.experiment_dir, str(local))
    report_dir = analysis.write_report(local)
    pyarrow.fs.copy_files(str(report_dir), f"{args.experiment_dir}/report")
    return report_dir


def _print_summary(report_dir: Path, elapsed_s: float) -> None:
    import pandas as pd

    summary = pd.read_csv(report_dir / "summary.csv")
    print(f"\nDone in {elapsed_s / 60:.1f} min. {analysis.verdict(summary)}")
    columns = [
        c
        for c in ("optimizer", "mean", "std", "ci_low", "ci_high", "test_acc_mean", "n_diverged")
        if c in summary.columns
    ]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"Report: {report_dir / 'report.md'}")
