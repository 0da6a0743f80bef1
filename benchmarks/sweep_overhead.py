"""Sweep overhead: the same small trials as plain processes and as an optsweep study (the public API).

    python benchmarks/sweep_overhead.py [--trials N] [--epochs E] [--model M] [--repeats R]
        [--torchtrainer-trials K] [--skip-torchtrainer] [--quick]

The trials: N configurations of Adam on the digits default (the CNN by default: ~0.2 s per epoch on
one core, so 15 epochs are ~3 s of compute), drawn by the study's own random search (the LR narrowed
to 3e-4..3e-3 so that none diverges and every trial trains all its epochs), one seed each. Both sides
run the same trial configs: the plain side takes them from the study's plan (`optsweep.Study.plan`),
and the study's trials table is checked against them (learning rates, and the final accuracy).

Every time is wall-clock from "start" to "all results in"; process start-up and imports count on both
sides (the trial processes of either side import torch and optsweep afresh).

- plain: `trainables.loop.train` with a `LocalSession` that copies every epoch's checkpoint to disk (as a
  Tune trial persists it), in as many freshly spawned processes as the machine has cores (a
  ProcessPoolExecutor, 1 torch thread each), trials handed out one at a time.
- study: `optsweep.Study(task="digits", optimizers=["adam"], scheduler="fifo", confirm_seeds=0,
  ...).run(storage_path, fuse=0, max_concurrent=cores)` in this process (imported before the clock
  starts): planning, the study's own local Ray start, every trial as its own Tune trial (the
  single-worker fast path: 1 CPU each, actor reuse, a checkpoint every epoch) and the report. Each
  repeat starts its own local Ray (when none runs already) and shuts it down; "without Ray's start"
  subtracts the time until the study's "Ray: ..." line.
- 2-worker TorchTrainer: the first K configs with `workers_per_trial=2` of 0.5 CPU each, one trial at a
  time (a trial then fills the cores), against the plain run of the same K configs.

A shared machine is noisy, so plain and study runs alternate: plain, study, plain, study, plain (R=2),
and each study run is compared with the mean of the plain runs on either side of it; the load average
as each run ended is printed too. The CPU time of every process (driver, trial processes, Ray's own)
is sampled to show where the time goes, and gives a CPU-time ratio that other work on the machine
skews far less than wall-clock time (needs psutil). The last line is the headline: the fast path's
wall-clock ratio, Ray's start included.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import logging
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from optsweep.trainables import checkpoints, loop
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.sessions import LocalSession
from optsweep.vocabulary import DEFAULT_TARGET

if TYPE_CHECKING:  # Ray is imported only where it is used: the plain processes never load it.
    import pandas as pd

    import optsweep

OPTIMIZER = "adam"
LR_RANGE = (3e-4, 3e-3)
SCHEDULES = ("constant", "cosine")
DEFAULTS = {"trials": 8, "epochs": 15, "repeats": 2, "torchtrainer_trials": 4}
QUICK = {"trials": 2, "epochs": 1, "repeats": 1, "torchtrainer_trials": 1}
TRAIN_WORKER_CPUS = 0.5  # 2 workers + the trial's driver (0.01 CPU) fit on 2 cores
GOAL = 1.30
SAMPLE_PERIOD_S = 0.5


@dataclass(frozen=True)
class TrialTiming:
    """One trial of the plain loop, timed inside its process."""

    started_at: float  # time.time()
    compute_s: float  # the whole loop.train call
    save_s: float  # of which writing checkpoints (checkpoints.save; the Tune side does it too)
    copy_s: float  # of which copying them to the checkpoint root (LocalSession.report)
    threads: int
    val_acc: float


@dataclass(frozen=True)
class PlainRun:
    started_at: float
    wall_s: float
    cpu_s: float  # user + system time of the pool's processes
    trials: list[TrialTiming]
    load: float = 0.0  # the 1-minute load average as the run ended

    @property
    def compute_s(self) -> list[float]:
        return [t.compute_s for t in self.trials]

    @property
    def first_trial_after_s(self) -> float:
        return min(t.started_at for t in self.trials) - self.started_at


@dataclass(frozen=True)
class TuneRun:
    """One study run through the public API."""

    ray_start_s: float  # from the call until the study's "Ray: ..." line (planning and Ray's start)
    wall_s: float  # the whole `Study.run` call, Ray's start and the report included
    trial_time_s: list[float]  # each trial's own time (the trials table's time_s)
    val_acc: dict[int, float]  # the final val_acc by configuration number
    lr: dict[int, float]  # the learning rate by configuration number
    cpu_s: dict[str, float] = field(default_factory=dict)  # by process role, during the run
    load: float = 0.0  # the 1-minute load average as the run ended

    @property
    def total_s(self) -> float:
        return self.wall_s

    @property
    def without_ray_start_s(self) -> float:
        return self.wall_s - self.ray_start_s


@dataclass(frozen=True)
class Measurements:
    plain: list[PlainRun]  # before, between and after the Tune runs
    tune: list[TuneRun]
    multi: TuneRun | None = None
    multi_plain: PlainRun | None = None
    worker_threads: str = ""

    def baseline_s(self, index: int) -> float:
        """The plain wall time around Tune run `index`: the mean of the plain runs on either side."""
        return (self.plain[index].wall_s + self.plain[index + 1].wall_s) / 2

    @property
    def cpu_ratio(self) -> float:
        """All CPU the Tune runs used (ray.init to end of fit) over the plain runs' around them."""
        plain = sum((self.plain[i].cpu_s + self.plain[i + 1].cpu_s) / 2 for i in range(len(self.tune)))
        return sum(sum(run.cpu_s.values()) for run in self.tune) / plain

    @property
    def ratio(self) -> float:
        """The fast path's ratio over all repeats, ray.init included."""
        baseline = sum(self.baseline_s(i) for i in range(len(self.tune)))
        return sum(run.total_s for run in self.tune) / baseline


# ---------------------------------------------------------------- trial configurations


def study(name: str, trials: int, epochs: int, model: str) -> optsweep.Study:
    """The study a real sweep would run: one optimizer, `trials` configurations x 1 seed, FIFO, no
    confirmation stage."""
    import optsweep

    return optsweep.Study(
        "digits",
        task_args={"model": model},
        optimizers=[OPTIMIZER],
        num_samples=trials,
        seeds=1,
        confirm_seeds=0,
        max_epochs=epochs,
        schedules=SCHEDULES,
        lr_min=LR_RANGE[0],
        lr_max=LR_RANGE[1],
        scheduler="fifo",
        name=name,
    )


def run_options(workers: int, cores: int) -> dict[str, Any]:
    """`Study.run`'s options: unfused; single-worker trials 1 CPU each, as many at once as cores; 2-worker
    trials one at a time."""
    if workers == 1:
        return {"fuse": 0, "max_concurrent": cores, "cpus_per_worker": 1.0}
    return {
        "fuse": 0,
        "max_concurrent": 1,
        "workers_per_trial": workers,
        "cpus_per_worker": TRAIN_WORKER_CPUS,
    }


def trial_configs(planned: optsweep.Study, storage: str, cores: int) -> list[dict[str, Any]]:
    """The trial configs the study's random search draws (seed 0), as Tune hands them to the trainable:
    from the study's own plan (`Study.plan`, no Ray)."""
    from optsweep.sweeps.runner.plan import random_search_trials
    from optsweep.sweeps.search import spaces

    args = planned.plan(storage, **run_options(1, cores)).args
    space = spaces.space_for(OPTIMIZER, lr_range=args.lr_range(OPTIMIZER), schedules=args.schedules)
    return [
        {"optimizer": OPTIMIZER, **trial, "settings": args.settings()}
        for trial in random_search_trials(space, args)
        if trial["seed"] == 0
    ]


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ---------------------------------------------------------------- plain loop


class _TimedLocalSession(LocalSession):
    """A LocalSession that adds up the time its checkpoint copies take."""

    copy_s = 0.0

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        started = time.perf_counter()
        super().report(metrics, checkpoint_dir)
        self.copy_s += time.perf_counter() - started


@contextlib.contextmanager
def _timed_checkpoint_saves() -> Iterator[list[float]]:
    """Add up the time `checkpoints.save` takes (the loop calls it through the module) in this process."""
    spent = [0.0]
    save = checkpoints.save

    def timed_save(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        save(*args, **kwargs)
        spent[0] += time.perf_counter() - started

    checkpoints.save = timed_save  # type: ignore[assignment]
    try:
        yield spent
    finally:
        checkpoints.save = save  # type: ignore[assignment]


def _one_torch_thread() -> None:
    torch.set_num_threads(1)


def plain_trial(config: dict[str, Any]) -> TrialTiming:
    """One trial in this process, every epoch's checkpoint copied to a temporary directory."""
    train_config = TrainConfig.from_trial_config(config)
    with tempfile.TemporaryDirectory(prefix="optsweep-plain-") as root, _timed_checkpoint_saves() as saves:
        session = _TimedLocalSession(checkpoint_root=root, device=torch.device("cpu"))
        started_at, started = time.time(), time.perf_counter()
        metrics = loop.train(train_config, session)
        elapsed = time.perf_counter() - started
    score = float(metrics[DEFAULT_TARGET.key])
    return TrialTiming(started_at, elapsed, saves[0], session.copy_s, torch.get_num_threads(), score)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_plain(configs: Sequence[dict[str, Any]], processes: int) -> PlainRun:
    """The configs in `processes` freshly spawned processes (start-up and imports included)."""
    cpu_before, started_at, started = _children_cpu_s(), time.time(), time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_one_torch_thread,
    ) as pool:
        trials = list(pool.map(plain_trial, configs))
        wall_s = time.perf_counter() - started  # all results in; the processes' exit is not waited for
    return PlainRun(started_at, wall_s, _children_cpu_s() - cpu_before, trials, load_average())


# ---------------------------------------------------------------- CPU accounting


def process_role(cmdline: Sequence[str]) -> str:
    """What a process of the local Ray does, from its title (a worker's title follows its task)."""
    title = cmdline[0] if cmdline else "?"
    if title.startswith("ray::"):
        name = title.removeprefix("ray::").split()[0].split(".")[0]
        return {"ImplicitFunc": "Tune trial processes", "IDLE": "idle workers"}.get(name, f"ray::{name}")
    program = next((Path(arg).name for arg in cmdline if arg.endswith(".py")), Path(title).name)
    return program if program in ("gcs_server", "raylet") else "other Ray daemons"


class CpuSampler:
    """Samples the CPU time of this process and all its descendants (the local Ray's processes) every
    `period_s`; a process's time goes to its last-seen role. Does nothing without psutil."""

    def __init__(self, period_s: float = SAMPLE_PERIOD_S) -> None:
        self.period_s = period_s
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._own_start = time.process_time()
        self.driver_s = 0.0

    def __enter__(self) -> CpuSampler:
        self._own_start = time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take a last sample and stop (call it while the processes of interest still live)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._sample()
        self.driver_s = time.process_time() - self._own_start

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def _sample(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        for proc in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                self._seen[proc.pid] = (process_role(proc.cmdline()), times.user + times.system)

    def by_role(self) -> dict[str, float]:
        """CPU seconds by role; the driver (Tune's controller, loggers, snapshots) is this process."""
        totals: dict[str, float] = {"driver": self.driver_s}
        for role, seconds in self._seen.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return totals


# ---------------------------------------------------------------- the study


class TimedLines(io.TextIOBase):
    """A stdout that keeps each line the study prints with the time it arrived (perf_counter)."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._held = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *whole, self._held = (self._held + text).split("\n")
        now = time.perf_counter()
        self.lines += [(now, line) for line in whole]
        return len(text)

    def first(self, prefix: str) -> float | None:
        return next((at for at, line in self.lines if line.startswith(prefix)), None)


def run_study(planned: optsweep.Study, storage: str, workers: int, cores: int) -> TuneRun:
    """`planned.run(...)` in this process, its CPU sampled; a local Ray it started is shut down after."""
    import ray

    ray_was_running = ray.is_initialized()
    out = TimedLines()
    with CpuSampler() as sampler:
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out):
                result = planned.run(storage, **run_options(workers, cores))
            wall_s, load = time.perf_counter() - started, load_average()
            sampler.stop()
        finally:
            if not ray_was_running:
                ray.shutdown()
    ray_up = out.first("Ray: ")
    return TuneRun(
        ray_start_s=(ray_up - started) if ray_up is not None else 0.0,
        wall_s=wall_s,
        trial_time_s=[float(t) for t in result.trials["time_s"]],
        val_acc=_check_results(result.trials, planned_epochs(result.trials)),
        lr={int(row.configuration): float(row.lr) for row in result.trials.itertuples()},
        cpu_s=sampler.by_role(),
        load=load,
    )


def planned_epochs(trials: pd.DataFrame) -> int:
    return int(trials["max_epochs"].max())


def _check_results(trials: pd.DataFrame, epochs: int) -> dict[int, float]:
    """The final val_acc by configuration; raises unless every trial trained all its epochs."""
    short = trials[(trials["epochs"] != epochs) | (trials["status"] != "completed")]
    if len(short):
        raise RuntimeError(f"the study did not train every trial to the end: {short.to_dict('records')}")
    return {int(row.configuration): float(row.final_val_acc) for row in trials.itertuples()}


def train_worker_threads(cores: int) -> str:
    """torch threads and OMP_NUM_THREADS in a Ray actor with a Train worker's CPUs (own local Ray)."""
    import ray

    @ray.remote(num_cpus=TRAIN_WORKER_CPUS)
    class ThreadProbe:
        def threads(self) -> str:
            return f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})"

    ray_was_running = ray.is_initialized()
    if not ray_was_running:
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        actor = ThreadProbe.remote()  # type: ignore[attr-defined]
        return ray.get(actor.threads.remote(), timeout=120)
    finally:
        if not ray_was_running:
            ray.shutdown()


# ---------------------------------------------------------------- report


def ratio_line(label: str, ratio: float, trials: int) -> str:
    return f"sweep overhead{label}: tune/plain = {ratio:.2f}x ({trials} trials)"


def describe_plain(runs: Sequence[PlainRun], processes: int) -> list[str]:
    trials = [t for run in runs for t in run.trials]
    compute = [t.compute_s for t in trials]
    per_run = statistics.mean(sum(run.compute_s) for run in runs)
    return [
        f"plain: {processes} spawned processes, 1 torch thread each "
        f"(seen: {sorted({t.threads for t in trials})}), every epoch's checkpoint copied to disk",
        f"  runs: {', '.join(f'{run.wall_s:.1f} s' for run in runs)}",
        f"  per-trial compute (loop.train): median {statistics.median(compute):.2f} s "
        f"(min {min(compute):.2f}, max {max(compute):.2f}); {per_run:.1f} s per run "
        f"= {per_run / processes:.1f} s per core",
        f"  of which checkpoints: writing {statistics.mean(t.save_s for t in trials):.3f} s, "
        f"copying {statistics.mean(t.copy_s for t in trials):.3f} s per trial",
        f"  first trial began {statistics.mean(r.first_trial_after_s for r in runs):.1f} s after the "
        f"start (spawn + imports); CPU of the pool's processes "
        f"{statistics.mean(r.cpu_s for r in runs):.1f} s per run",
    ]


def cpu_breakdown(cpu_s: dict[str, float]) -> str:
    if not cpu_s.get("Tune trial processes"):
        return "n/a (needs psutil)"
    parts = (f"{role} {seconds:.1f}" for role, seconds in sorted(cpu_s.items(), key=lambda kv: -kv[1]))
    return f"{sum(cpu_s.values()):.1f} s: {', '.join(parts)}"


def describe_tune_run(index: int, run: TuneRun, baseline_s: float, compute_s: float, cores: int) -> list[str]:
    trials = len(run.trial_time_s)
    inside = sum(run.trial_time_s)
    return [
        f"  run {index}: Ray up after {run.ray_start_s:.2f} s, whole study {run.wall_s:.2f} s "
        f"vs plain {baseline_s:.2f} s -> {run.wall_s / baseline_s:.2f}x "
        f"({run.without_ray_start_s / baseline_s:.2f}x without Ray's start)",
        f"    trials' own time: median {statistics.median(run.trial_time_s):.2f} s, total {inside:.1f} s "
        f"({inside - compute_s:+.1f} s vs plain compute)",
        f"    per-trial overhead {(run.wall_s - baseline_s) * cores / trials:+.2f} core-s "
        f"({(run.without_ray_start_s - baseline_s) * cores / trials:+.2f} without Ray's start)",
        f"    CPU time during the study: {cpu_breakdown(run.cpu_s)}",
    ]


def same_results(configs: Sequence[dict[str, Any]], plain: PlainRun, runs: Sequence[TuneRun]) -> str:
    """Raises unless the study trained the plain configs; says how far their final accuracies are apart."""
    for run in runs:
        if sorted(run.val_acc) != list(range(len(configs))):
            raise RuntimeError(
                f"the study trained configurations {sorted(run.val_acc)}, not 0..{len(configs) - 1}"
            )
        for i, config in enumerate(configs):
            if not math.isclose(run.lr[i], config["lr"], rel_tol=1e-9):
                raise RuntimeError(
                    f"configuration {i}: the study's lr {run.lr[i]} is not the plain {config['lr']}"
                )
    gaps = [abs(t.val_acc - run.val_acc[i]) for run in runs for i, t in enumerate(plain.trials)]
    return f"  same trials (learning rates checked): max |val_acc(plain) - val_acc(study)| = {max(gaps):.4f}"


def describe_multi(run: TuneRun, plain: PlainRun, worker_threads: str) -> list[str]:
    trials = len(run.trial_time_s)
    return [
        f"2-worker TorchTrainer: {trials} trials (the first {trials} configs), one at a time, 2 workers x "
        f"{TRAIN_WORKER_CPUS} CPU (DDP, each worker trains on half the data); plain run of the same "
        f"{trials} configs: {plain.wall_s:.2f} s",
        f"  Ray up after {run.ray_start_s:.2f} s, whole study {run.wall_s:.2f} s -> "
        f"{run.wall_s / plain.wall_s:.2f}x "
        f"({run.without_ray_start_s / plain.wall_s:.2f}x without Ray's start)",
        f"  per-trial time (TorchTrainer.fit included): median {statistics.median(run.trial_time_s):.2f} s "
        f"(plain compute median {statistics.median(plain.compute_s):.2f} s); per-trial overhead "
        f"{(run.wall_s - plain.wall_s) / trials:+.2f} s wall",
        f"  CPU time during the study: {cpu_breakdown(run.cpu_s)} (plain: {plain.cpu_s:.1f} s)",
        f"  a Ray actor with a Train worker's {TRAIN_WORKER_CPUS} CPU: torch threads {worker_threads}",
    ]


def describe_load(m: Measurements, cores: int) -> list[str]:
    """How busy the machine was: other work on it skews wall-clock times (not so much CPU times)."""
    runs = {"plain": m.plain, "tune": m.tune}
    if m.multi is not None and m.multi_plain is not None:
        runs |= {"2-worker": [m.multi], "its plain": [m.multi_plain]}
    loads = [run.load for group in runs.values() for run in group]
    lines = [
        f"machine load (1-min load average as each run ended, {cores} cores): "
        + "; ".join(f"{name} {', '.join(f'{r.load:.1f}' for r in group)}" for name, group in runs.items())
    ]
    if max(loads) > cores + 0.5:
        lines.append(
            "  note: other work kept the machine busy, so the wall-clock figures mostly measure how it "
            "hit each run; the CPU-time ratio is the steadier figure"
        )
    return lines


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, help=f"trials per mode (default {DEFAULTS['trials']})")
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default {DEFAULTS['epochs']})")
    parser.add_argument("--model", choices=("cnn", "mlp"), help="digits model (default cnn; --quick: mlp)")
    parser.add_argument(
        "--repeats", type=int, help=f"Tune runs, each between two plain runs (default {DEFAULTS['repeats']})"
    )
    parser.add_argument(
        "--torchtrainer-trials",
        type=int,
        help=f"trials of the 2-worker mode (default {DEFAULTS['torchtrainer_trials']}; ~15 s start-up each)",
    )
    parser.add_argument("--skip-torchtrainer", action="store_true", help="skip the 2-worker mode")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 one-epoch MLP trials, 1 repeat, no TorchTrainer"
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.model = "mlp" if args.model is None else args.model
        args.skip_torchtrainer = True
    args.model = args.model or "cnn"
    if min(args.trials, args.epochs, args.repeats, args.torchtrainer_trials) < 1:
        parser.error("--trials, --epochs, --repeats and --torchtrainer-trials must be >= 1")
    return args


def measure(opts: argparse.Namespace, cores: int, root: str) -> tuple[Measurements, list[dict[str, Any]]]:
    """Every timed run; the study runs alternate with plain ones so that drifting load hits both."""
    storage = f"{root}/storage"
    configs = trial_configs(study("plan", opts.trials, opts.epochs, opts.model), storage, cores)
    plain, tune_runs = [run_plain(configs, cores)], []
    for index in range(opts.repeats):
        fast = study(f"fast_path_{index}", opts.trials, opts.epochs, opts.model)
        tune_runs.append(run_study(fast, storage, 1, cores))
        plain.append(run_plain(configs, cores))
    if opts.skip_torchtrainer:
        return Measurements(plain, tune_runs), configs
    k = opts.torchtrainer_trials
    multi = run_study(study("torchtrainer", k, opts.epochs, opts.model), storage, 2, cores)
    subset = configs[:k]
    return Measurements(
        plain, tune_runs, multi, run_plain(subset, cores), train_worker_threads(cores)
    ), configs


def report(m: Measurements, configs: Sequence[dict[str, Any]], opts: argparse.Namespace, cores: int) -> None:
    compute = statistics.mean(sum(run.compute_s) for run in m.plain)
    print("\n".join(describe_plain(m.plain, cores)))
    print(f"study, fast path: {cores} trials at once, 1 CPU each, unfused, FIFO, no confirmation stage")
    for index, run in enumerate(m.tune):
        print("\n".join(describe_tune_run(index + 1, run, m.baseline_s(index), compute, cores)))
    print(same_results(configs, m.plain[0], m.tune))
    without = sum(r.without_ray_start_s for r in m.tune) / sum(m.baseline_s(i) for i in range(len(m.tune)))
    print(f"  over {len(m.tune)} run(s): {m.ratio:.2f}x incl. Ray's start, {without:.2f}x without")
    if all(run.cpu_s.get("Tune trial processes") for run in m.tune):
        print(f"  CPU time (far less skewed by other load than wall time): tune/plain = {m.cpu_ratio:.2f}x")
    if m.multi is not None and m.multi_plain is not None:
        print("\n".join(describe_multi(m.multi, m.multi_plain, m.worker_threads)))
        ratio = m.multi.total_s / m.multi_plain.wall_s
        print(ratio_line(" (2-worker TorchTrainer)", ratio, len(m.multi.trial_time_s)))
    load_lines = describe_load(m, cores)
    print("\n".join(load_lines))
    verdict = "meets" if m.ratio <= GOAL else "misses"
    if len(load_lines) > 1:  # the machine was busy
        verdict += " (not conclusive at this load)"
    print(f"goal <= {GOAL:.2f}x for the fast path (Ray's start included, as below): {verdict}")
    print(ratio_line("", m.ratio, opts.trials))


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse_args(argv)
    cores = available_cores()
    print(
        f"{opts.trials} trials: {OPTIMIZER} on digits/{opts.model}, {opts.epochs} epochs, batch 64, "
        f"lr {LR_RANGE[0]:g}..{LR_RANGE[1]:g}, schedules {'/'.join(SCHEDULES)}; {cores} cores; "
        f"{opts.repeats} study run(s), each between two plain runs; load average {load_average():.1f}",
        flush=True,
    )
    root = tempfile.mkdtemp(prefix="optsweep-overhead-")
    try:
        report(*measure(opts, cores, root), opts, cores)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
