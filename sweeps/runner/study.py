"""Run an optimizer study on Ray Tune: one Tune experiment for its search, every optimizer's trials in it
with the same budget for each, then one for its confirmation.

`plan.prepare` resolves the study without Ray; `execute` runs it: it records the study, connects to Ray,
checks the cluster, runs the search (`sweeps.runner.tuner`) and the confirmation
(`sweeps.runner.confirmation`), and writes the report. The layout on storage is `sweeps.record.layout`'s.
Each optimizer's configurations compete only with each other under early stopping, and its searcher
(random, grid or Optuna TPE) spends exactly `num_samples` configurations x `seeds` trials. Running the same
command again resumes: finished trials are kept, unfinished ones continue from their last checkpoint, a
finished study just rewrites its report.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import ray

from optsweep.errors import OptsweepError
from optsweep.sweeps.cluster import interrupts, shipping, storage_guard
from optsweep.sweeps.monitoring import tracking
from optsweep.sweeps.record import identity, layout, reproduce, study_record
from optsweep.sweeps.runner import confirmation, safeguards, tuner
from optsweep.sweeps.runner.plan import Plan

# Old experiments' tuner.pkl name these here (an Optuna searcher's space is a partial of it).
from optsweep.sweeps.runner.tuner import _define_by_run  # noqa: F401
from optsweep.sweeps.spec import StudySpec
from optsweep.trainables import decisions

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
        layout.refuse_per_optimizer_layout(args.experiment_dir, list(args.labels))
        no_study_file = reproduce.write(args, plan.task, plan.contenders, task_is_named=plan.task_is_named)
        if no_study_file:
            print(f"No {reproduce.STUDY_YAML} (the study file that reruns this study): {no_study_file}.")
        _connect_ray(args, plan.user_code, address, source)
        check_cluster(args)
        safeguards.check_feasible(args, joined=address is not None)
        tracking.for_study(args).active()  # its once-per-study checks, before any experiment starts
        _say_why_unfused(plan)
        run_stages(plan)
        report_dir = _write_report(args)
        tracking.for_study(args).log_study(report_dir)
    return report_dir


def run_stages(plan: Plan) -> None:
    """The search (one Tune experiment, every optimizer's trials), unless its choices are recorded already,
    then the confirmation (`sweeps.runner.confirmation`). Each `fit` runs in this (the main) thread: the
    first Ctrl-C stops it resumably and ends the study (`sweeps.cluster.interrupts`)."""
    args = plan.args
    recorded = confirmation.read_choice(args.experiment_dir) if args.confirm_seeds else None
    if recorded is not None and set(args.labels) <= set(recorded["optimizers"]):
        print(f"The search has finished (its choices are in {confirmation.CHOICE_FILE}).", flush=True)
    else:
        tuner.run_search(plan)
    if args.confirm_seeds:
        confirmation.run(plan)


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


def check_cluster(args: StudySpec) -> None:
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    hosts = {node["NodeManagerAddress"] for node in nodes}
    if len(hosts) > 1 and not args.is_remote_storage:
        raise OptsweepError(
            f"the Ray cluster spans {len(hosts)} hosts and Ray no longer syncs results to the head node, so "
            f"--storage-path {args.storage_path} must be shared storage (e.g. s3://bucket/optsweep)"
        )
    if args.decisions_channel is not None:
        decisions.create(args.decisions_channel)


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
