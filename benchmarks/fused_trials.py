"""Fused trials against unfused ones: the default study end to end (a), and training throughput (b).

    python benchmarks/fused_trials.py [--part a|b|all] [--repeats R] [--quick]
        [--study-timeout S] [--fuse K] [--keep-results DIR] [--study-args STUDY FLAGS...]
        [--model mlp|cnn] [--epochs E] [--ks 1 8 32] [--full] [--threads T] [--device cpu|cuda]

`--part` picks the part (default: all, (b) first and then (a)); `--repeats R` runs each part's modes in
R alternating rounds and keeps the best of each; `--quick` makes both parts a smoke test.

Part (a), the study: `python sweeps/adam_vs_sgd.py` (the default study: digits MLP, sgd/adam/adamw, 24
configurations x 5 seeds, 20 epochs) run twice as subprocesses, fused (the study's default, or
`--fuse K`) and with `--no-fuse`, each in its own fresh local Ray, with `--storage-path` a temporary
directory (or `--keep-results DIR`) and `--name fused` / `--name unfused`. Every flag after
`--study-args` goes to both runs (it must come last; `--quick` adds `--smoke`). Each run has a wall-clock
limit of `--study-timeout` seconds. With R rounds the order alternates (fused first in odd rounds,
unfused first in even ones) and each side keeps its best wall time; every run is printed.

- wall: the whole command, from its start (Ray start-up included) to its exit after the report is
  written; the load average at the end of each run is printed beside it. Where it went (imports and
  planning, Ray start, set-up, training, report, exit) is read from the study's own output, each line
  timestamped as it arrives (`wall_time_phases`).
- CPU: user + system time of the study process and of every process under it (Ray's GCS, raylet,
  workers, dashboard), each counted on its own: each run goes through a small wrapper (this script,
  `--measure-command`) that samples its descendants' CPU times every 0.2 s (psutil) and keeps each
  process's last sample, so a process's last < 0.2 s are missed. (RUSAGE_CHILDREN alone misses about
  half: Ray's raylet ignores SIGCHLD, so its workers' times are discarded when they end.) The wrapper
  is a child subreaper (Linux prctl): Ray processes orphaned by their parents stay under it, and those
  still alive `--grace` seconds after the study exits are killed (and counted).
- the check that both runs reached the same result: the verdict line ("Done in X min. <verdict>")
  with the time taken out; the best configuration of each optimizer in the reports' summary.csv (its
  hyperparameters, and its mean to 1e-9); the trials.csv tables joined on optimizer + hyperparameters +
  seed (configuration ids follow trial-id order, which fusion changes), with the rows whose status or
  epochs differ counted and the largest |difference| of the best target metric (best_val_acc).
  "Identical to float rounding" needs all of these equal (means to 1e-9). "Same conclusion" allows
  what float32 rounding drifting apart over the epochs changes (fused members compute the same
  updates with batched kernels, so a sensitive trial's metrics can drift): the verdict's numbers,
  the means, a status (which seed of a configuration diverges) — but not the verdict's wording, the
  best configurations, the set of trials or the epochs each trained (the early-stopping decisions).
  A different conclusion exits with status 1 once everything is printed.

The last line is the headline: `fused study speed-up: N.Nx`, the unfused run's best wall time over the
fused run's.

Part (b), training throughput: for each K: K configurations of Adam on the digits task (log-uniform lr
in 3e-4..3e-3 from a fixed seed, seeds 0..K-1), trained E epochs

- fused: `trainables.fused.train_fused`, all K members in one process at once;
- loop: `trainables.loop.train` with a `LocalSession`, the K configurations one after another in this
  process (the project's one training loop, which also writes a staging checkpoint every epoch);
- plain: the same K trainings in a minimal loop (model, `ShardedLoader`, optimizer, schedule, the
  same per-epoch evaluation, no checkpoints): the peer without any of the loop's bookkeeping.

Throughput is member-epochs per second (K * E / wall-clock seconds, data and model set-up included);
the ratios are fused over each peer, all measured in this run, by wall clock and by this process's
CPU time (which other work on a shared machine skews far less). `--full` adds K = 128; `--quick` runs
K = 1 and 4 for one epoch. The fused members' last validation metrics are checked against the loop's
(largest relative difference printed). Its last line: the fused speed-up over the plain loop at the
largest K (the script's last line when part (a) does not run).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from optsweep import vocabulary as v
from optsweep.optimizers import schedules
from optsweep.trainables import data, loop, optimizer_choice
from optsweep.trainables.config import TrainConfig
from optsweep.trainables.fused import train_fused
from optsweep.trainables.sessions import LocalSession
from optsweep.trainables.tasks import Task, build_task, param_groups

OPTIMIZER = "adam"
LR_RANGE = (3e-4, 3e-3)


def configs(count: int, model: str, epochs: int) -> list[TrainConfig]:
    rng = random.Random(0)
    low, high = (math.log(x) for x in LR_RANGE)
    return [
        TrainConfig(
            optimizer=OPTIMIZER,
            hparams={"lr": math.exp(rng.uniform(low, high))},
            seed=seed,
            task="digits",
            task_args={"model": model},
            max_epochs=epochs,
            amp=False,
        )
        for seed in range(count)
    ]


def plain_train(config: TrainConfig, task: Task, device: torch.device) -> float:
    """A minimal training of `config` (no checkpoints, no reports); returns the last val accuracy."""
    loop.seed_everything(config.seed)
    splits = task.data()
    model = task.model().to(device)
    batch_size = config.batch_size or task.batch_size
    loader = data.make_loader(splits.train, batch_size, shuffle=True, seed=config.seed)
    val = data.make_loader(splits.val, batch_size, shuffle=False, seed=config.seed)
    optimizer = optimizer_choice.build(
        config.optimizer, param_groups(model, task.weight_decay), config.hparams
    )
    epochs = config.max_epochs or task.max_epochs
    scheduler = schedules.build(config.schedule, optimizer, epochs * len(loader))
    score = math.nan
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        model.train()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            loss = task.loss(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        score = loop.evaluate(model, val, task, device, use_amp=False)[task.target.metric]
    return score


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall-clock seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def measure(count: int, model: str, epochs: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Member-epochs per second of each mode (the best of `repeats` alternating rounds, by wall clock
    and by CPU time) and the largest relative difference of the last val metric, fused vs loop."""
    group = configs(count, model, epochs)
    task = build_task("digits", {"model": model})

    def run_loop() -> list[dict[str, Any]]:
        last = []
        for config in group:
            session = LocalSession(device=device)
            loop.train(config, session, task=task)
            last.append(session.reports[-1])
        return last

    modes: dict[str, Callable[[], Any]] = {
        "fused": lambda: train_fused(group, task=task, device=device),
        "loop": run_loop,
        "plain": lambda: [plain_train(config, task, device) for config in group],
    }
    wall = dict.fromkeys(modes, math.inf)
    cpu = dict.fromkeys(modes, math.inf)
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in modes.items():
            results[name], seconds, cpu_seconds = _timed(run)
            wall[name], cpu[name] = min(wall[name], seconds), min(cpu[name], cpu_seconds)
    fused, alone = results["fused"], results["loop"]
    assert all(m.status == v.COMPLETED for m in fused), "a member diverged: the benchmark's lrs are too large"
    key = task.target.key
    worst = max(
        abs(m.reports[-1][key] - a[key]) / max(abs(a[key]), 1e-12) for m, a in zip(fused, alone, strict=True)
    )
    member_epochs = count * epochs
    measured = {name: member_epochs / wall[name] for name in modes}
    measured |= {f"{name}_cpu": member_epochs / cpu[name] for name in modes}
    return measured | {"worst": worst}


# Part (a): the study end to end.

REPO = Path(__file__).resolve().parents[1]
STUDY_SCRIPT = REPO / "sweeps" / "adam_vs_sgd.py"
FUSED, UNFUSED = "fused", "unfused"
RESERVED_STUDY_FLAGS = ("--storage-path", "--name", "--fuse", "--no-fuse")
VERDICT_LINE = re.compile(r"^Done in [0-9.]+ min\. (?P<verdict>.*)$")
MEAN_TOLERANCE = 1e-9
# The trials table's columns that depend on the run rather than on what was trained.
RUN_DEPENDENT = ("trial_id", "time_s", "node_id", "config_id", "trial_dir", "tune_status", "error_message")
MEASURE_FLAG = "--measure-command"  # the wrapper mode of this script (see _measure_command)
PR_SET_CHILD_SUBREAPER = 36
SAMPLE_S = 0.2  # how often the wrapper samples the CPU time of the study's processes


@dataclass(frozen=True)
class StudyRun:
    """One study command: where its results are, and what it cost."""

    label: str
    round: int
    experiment: Path
    log: Path
    returncode: int
    timed_out: bool
    wall_s: float
    cpu_s: float  # sampled (NaN without psutil)
    reaped_cpu_s: float  # RUSAGE_CHILDREN
    subreaper: bool
    stragglers: int
    load: float
    verdict: str | None
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds after the start, the line)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and (self.experiment / "report").is_dir()


@dataclass(frozen=True)
class Comparison:
    """What differs between a fused run's report and an unfused run's."""

    verdicts: tuple[str | None, str | None]
    best_differing: tuple[str, ...]  # optimizers whose best configuration differs (or is missing)
    largest_mean_diff: float  # of the best configurations' means, over the optimizers present in both
    joined: int  # trials found in both tables
    unmatched: int  # trials found in one table only
    differing: int  # joined trials whose status or epochs differ
    status_differing: int  # of which the status differs
    epochs_differing: int  # of which the epochs trained differ
    metric: str
    largest_metric_diff: float  # |Δ metric| over the joined trials

    @property
    def same_verdict(self) -> bool:
        return self.verdicts[0] == self.verdicts[1]

    @property
    def same_conclusion(self) -> bool:
        """The same verdict up to its numbers, the same best configurations, the same trials and the
        same early-stopping decisions (epochs): what float32 rounding drifting apart may not change."""
        return (
            None not in self.verdicts
            and verdict_shape(self.verdicts[0]) == verdict_shape(self.verdicts[1])
            and not self.best_differing
            and self.unmatched == 0
            and self.epochs_differing == 0
        )

    @property
    def identical(self) -> bool:
        """The same to float rounding: also the verdict's numbers, the means, every status."""
        return (
            self.same_conclusion
            and self.same_verdict
            and self.largest_mean_diff <= MEAN_TOLERANCE
            and self.differing == 0
        )


@dataclass(frozen=True)
class StudyBenchmark:
    runs: list[StudyRun]
    comparisons: list[Comparison]  # fused vs unfused, round by round

    def best(self, label: str, key: str = "wall_s") -> float:
        return min(getattr(run, key) for run in self.runs if run.label == label)

    @property
    def speed_up(self) -> float:
        return self.best(UNFUSED) / self.best(FUSED)


def verdict_shape(verdict: str | None) -> str | None:
    """The verdict without its numbers: parenthesised groups and numbers taken out."""
    if verdict is None:
        return None
    return re.sub(r"\d+(\.\d+)?", "#", re.sub(r"\([^()]*\)", "(...)", verdict))


def _key_value(value: Any) -> str:
    """A hyperparameter value as a join key: numbers to 10 significant digits, NaN as ''."""
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return "" if math.isnan(value) else format(float(value), ".10g")
    return str(value)


def _keyed(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    keys = frame[list(columns)].apply(lambda row: "|".join(_key_value(x) for x in row), axis=1)
    # Two trials with the same optimizer, hyperparameters and seed (never by the samplers): in order.
    return keys + "#" + keys.groupby(keys).cumcount().astype(str)


def trials_hparam_columns(trials: pd.DataFrame) -> list[str]:
    """The trials table's hyperparameter columns: those between seed and status."""
    columns = list(trials.columns)
    return columns[columns.index("seed") + 1 : columns.index("status")]


def summary_hparam_columns(summary: pd.DataFrame) -> list[str]:
    """The summary's configuration columns: those between config_id and n_seeds."""
    columns = list(summary.columns)
    return columns[columns.index("config_id") + 1 : columns.index("n_seeds")]


def compare_reports(
    fused: Path, unfused: Path, verdicts: tuple[str | None, str | None] = (None, None)
) -> Comparison:
    """Compare two experiments' reports (<experiment>/report/summary.csv and trials.csv)."""
    tables = [pd.read_csv(run / "report" / "trials.csv") for run in (fused, unfused)]
    summaries = [pd.read_csv(run / "report" / "summary.csv") for run in (fused, unfused)]

    hparams = sorted(set().union(*(summary_hparam_columns(s) for s in summaries)))
    best = [s.reindex(columns=["optimizer", *hparams, "mean"]).set_index("optimizer") for s in summaries]
    differing_best, mean_diffs = [], [0.0]
    for optimizer in sorted(set(best[0].index) | set(best[1].index)):
        if optimizer not in best[0].index or optimizer not in best[1].index:
            differing_best.append(optimizer)
            continue
        rows = [b.loc[optimizer] for b in best]
        if [_key_value(rows[0][c]) for c in hparams] != [_key_value(rows[1][c]) for c in hparams]:
            differing_best.append(optimizer)
        mean_diffs.append(abs(float(rows[0]["mean"]) - float(rows[1]["mean"])))

    key_columns = ["optimizer", "seed", *sorted(set().union(*(trials_hparam_columns(t) for t in tables)))]
    metric = next(c for c in tables[1].columns if c.startswith("best_"))
    keyed = []
    for table in tables:
        table = table.reindex(columns=list(dict.fromkeys([*table.columns, *key_columns])))
        keyed.append(table.set_index(_keyed(table, key_columns))[["status", "epochs", metric]])
    joined = keyed[0].merge(keyed[1], left_index=True, right_index=True, suffixes=("_fused", "_unfused"))
    status_differing = joined["status_fused"] != joined["status_unfused"]
    epochs_differing = joined["epochs_fused"] != joined["epochs_unfused"]
    metric_diff = (joined[f"{metric}_fused"] - joined[f"{metric}_unfused"]).abs()
    return Comparison(
        verdicts=verdicts,
        best_differing=tuple(differing_best),
        largest_mean_diff=max(mean_diffs),
        joined=len(joined),
        unmatched=len(keyed[0]) + len(keyed[1]) - 2 * len(joined),
        differing=int((status_differing | epochs_differing).sum()),
        status_differing=int(status_differing.sum()),
        epochs_differing=int(epochs_differing.sum()),
        metric=metric,
        largest_metric_diff=float(metric_diff.max()) if len(joined) else 0.0,
    )


RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+[A-Z]+ ")  # Ray's own logging
PHASES = ("imports and planning", "Ray start", "set-up", "training", "report", "exit")


def wall_time_phases(lines: Sequence[tuple[float, str]], wall_s: float) -> dict[str, float | None]:
    """Where a study's wall time went, from its output lines and when each arrived (seconds after the
    command started), as far as the study's public output tells (None: its marker line is missing):

    - imports and planning: until Ray's first log line (`ray.init` has begun; the study prints nothing
      before it starts Ray, and plans before that);
    - Ray start: until the study's "Ray: ..." line (Ray is up);
    - set-up: until the first "Starting <optimizer>" line (cluster checks, the Tuners);
    - training: until the last progress line ("[<optimizer> ...]"), every stage of every optimizer;
    - report: until the "Done in ..." line (the report is written, the verdict printed);
    - exit: until the process exited (Ray's shutdown, the interpreter's teardown)."""

    def first(predicate: Callable[[str], bool], after: float = -1.0) -> float | None:
        return next((t for t, line in lines if t >= after and predicate(line)), None)

    ray_up = first(lambda line: line.startswith("Ray: "))
    ray_log = first(lambda line: RAY_LOG_LINE.match(line) is not None)
    if ray_log is not None and ray_up is not None and ray_log > ray_up:
        ray_log = None
    starting = first(lambda line: line.startswith("Starting "))
    progress = [t for t, line in lines if line.startswith("[")]
    trained = progress[-1] if progress else None
    done = first(lambda line: VERDICT_LINE.match(line) is not None, trained if trained is not None else -1.0)
    marks = [0.0, ray_log, ray_up, starting, trained, done, wall_s]
    phases: dict[str, float | None] = {}
    for name, begin, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
        phases[name] = None if begin is None or end is None else max(end - begin, 0.0)
    return phases


def describe_phases(phases: dict[str, float | None]) -> str:
    known = [f"{name} {seconds:.1f} s" for name, seconds in phases.items() if seconds is not None]
    missing = [name for name, seconds in phases.items() if seconds is None]
    text = "; ".join(known)
    if missing:
        text += f" (not told apart by the output: {', '.join(missing)})"
    return text


def study_command(label: str, storage: Path, study_args: Sequence[str], fuse: int | None) -> list[str]:
    fusion = ["--no-fuse"] if label == UNFUSED else [] if fuse is None else ["--fuse", str(fuse)]
    return [
        sys.executable,
        str(STUDY_SCRIPT),
        *study_args,
        *fusion,
        "--storage-path",
        str(storage),
        "--name",
        label,
    ]


def _children() -> list[int]:
    """This process's live children (from /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _sample_cpu(seen: dict[tuple[int, float], float]) -> None:
    """Record the user + system CPU seconds of every live descendant of this process, by pid and start
    time (children's times not included: each process is counted on its own)."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            seen[(process.pid, process.create_time())] = times.user + times.system


def _reap_descendants(grace_s: float, sample: Callable[[], None]) -> int:
    """Wait for every child (orphaned descendants included, as a subreaper) to end, sampling their CPU
    time; after `grace_s` seconds, kill those still alive. Returns how many were killed."""
    deadline, killed = time.monotonic() + grace_s, set()
    while True:
        sample()
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            return len(killed)
        if time.monotonic() > deadline:
            for child in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
                killed.add(child)
        time.sleep(SAMPLE_S)


def _measure_command(argv: Sequence[str]) -> None:
    """The wrapper: `MEASURE_FLAG RESULT.json LOG TIMEOUT_S GRACE_S -- COMMAND...` runs COMMAND (output to
    LOG) with a wall-clock limit, reaps every descendant and writes its wall and CPU time to RESULT.json:
    cpu_s sampled from every descendant every SAMPLE_S seconds (psutil), reaped_cpu_s from
    RUSAGE_CHILDREN (which misses processes whose parent ignores SIGCHLD, as Ray's raylet does: its
    workers)."""
    result, log, timeout_s, grace_s = argv[0], argv[1], float(argv[2]), float(argv[3])
    command = list(argv[argv.index("--") + 1 :])
    subreaper = False
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    seen: dict[tuple[int, float], float] = {}
    sampled = importlib.util.find_spec("psutil") is not None

    def sample() -> None:
        if sampled:
            _sample_cpu(seen)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    timed_out = False
    lines: list[tuple[float, str]] = []
    with open(log, "w") as out:
        # Unbuffered, through a pipe: each line is timestamped as it arrives (where the wall time goes).
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        reader = threading.Thread(target=_timestamp_lines, args=(process, out, start, lines), daemon=True)
        reader.start()
        while process.poll() is None:
            if time.perf_counter() - start > timeout_s:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                break
            sample()
            time.sleep(SAMPLE_S)
    wall_s = time.perf_counter() - start
    load = os.getloadavg()[0]
    reader.join(timeout=grace_s)  # the pipe closes when the last process holding it exits
    stragglers = _reap_descendants(grace_s, sample)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    Path(result).write_text(
        json.dumps(
            {
                "returncode": process.returncode,
                "timed_out": timed_out,
                "wall_s": wall_s,
                "cpu_s": sum(seen.values()) if sampled else math.nan,
                "reaped_cpu_s": reaped_cpu_s,
                "subreaper": subreaper,
                "stragglers": stragglers,
                "load": load,
                "lines": list(lines),
            }
        )
    )


def _timestamp_lines(
    process: subprocess.Popen[str], out: Any, start: float, lines: list[tuple[float, str]]
) -> None:
    """Copy the command's output to `out`, noting when each line arrived."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
        out.write(line)
        out.flush()


def run_study(
    label: str,
    round_: int,
    root: Path,
    study_args: Sequence[str],
    fuse: int | None,
    timeout_s: float,
    grace_s: float,
) -> StudyRun:
    """One study command through the wrapper, in <root>/round<round_>/<label>."""
    storage = root / f"round{round_}"
    storage.mkdir(parents=True, exist_ok=True)
    log, result = storage / f"{label}.log", storage / f"{label}.json"
    wrapper = [sys.executable, str(Path(__file__).resolve()), MEASURE_FLAG, str(result), str(log)]
    wrapper += [str(timeout_s), str(grace_s), "--", *study_command(label, storage, study_args, fuse)]
    subprocess.run(wrapper, check=True, timeout=timeout_s + grace_s + 120, cwd=REPO)
    measured = json.loads(result.read_text())
    measured["lines"] = [(float(t), str(text)) for t, text in measured.get("lines", [])]
    verdicts = [m["verdict"] for m in map(VERDICT_LINE.match, log.read_text().splitlines()) if m]
    return StudyRun(
        label=label,
        round=round_,
        experiment=storage / label,
        log=log,
        verdict=verdicts[-1] if verdicts else None,
        **measured,
    )


def _describe(run: StudyRun) -> str:
    text = f"{run.label} {run.wall_s:.1f} s wall, {run.cpu_s:.1f} s CPU (load {run.load:.1f})"
    if run.stragglers:
        text += f", {run.stragglers} process(es) left behind killed"
    if run.timed_out:
        text += ", TIMED OUT"
    elif run.returncode:
        text += f", exit status {run.returncode}"
    return text


def comparison_lines(comparison: Comparison) -> list[str]:
    c = comparison
    if c.same_verdict:
        verdict = "same verdict"
    elif c.same_conclusion or verdict_shape(c.verdicts[0]) == verdict_shape(c.verdicts[1]):
        verdict = f"verdicts differ only in their numbers: {c.verdicts[0]!r} vs {c.verdicts[1]!r}"
    else:
        verdict = f"VERDICTS DIFFER: {c.verdicts[0]!r} vs {c.verdicts[1]!r}"
    best = (
        "same best configuration per optimizer"
        if not c.best_differing
        else f"BEST CONFIGURATION DIFFERS for {', '.join(c.best_differing)}"
    )
    same = "identical to float rounding" if c.identical else "not identical"
    conclusion = "same conclusion" if c.same_conclusion else "CONCLUSIONS DIFFER"
    return [
        f"  {verdict}",
        f"  {best}, largest |Δ mean| {c.largest_mean_diff:.1e}",
        f"  trials joined on optimizer + hyperparameters + seed: {c.joined} in both, "
        f"{c.unmatched} unmatched, {c.differing} with differing status/epochs (status {c.status_differing}, "
        f"epochs {c.epochs_differing}), largest |Δ {c.metric}| {c.largest_metric_diff:.1e}",
        f"  {conclusion}; {same}",
    ]


def study_benchmark(
    study_args: Sequence[str],
    repeats: int,
    timeout_s: float,
    grace_s: float = 30.0,
    fuse: int | None = None,
    keep: Path | None = None,
) -> StudyBenchmark:
    """Part (a): the study fused and unfused, `repeats` alternating rounds; prints every run, the
    comparisons and, last, the speed-up line. Raises SystemExit(2) when a run fails."""
    root = keep if keep is not None else Path(tempfile.mkdtemp(prefix="fused-study-"))
    command = " ".join(["python sweeps/adam_vs_sgd.py", *study_args])
    print(
        f"\nstudy, end to end: `{command}` fused ({'the default K' if fuse is None else f'--fuse {fuse}'}) "
        f"and with --no-fuse; {repeats} round(s), limit {timeout_s:.0f} s per run, results in {root}",
        flush=True,
    )
    print("CPU: user + system time of the study process and every process under it, Ray's included (sampled)")
    runs: list[StudyRun] = []
    comparisons: list[Comparison] = []
    try:
        for round_ in range(1, repeats + 1):
            order = (FUSED, UNFUSED) if round_ % 2 else (UNFUSED, FUSED)
            done = {}
            for label in order:
                run = run_study(label, round_, root, study_args, fuse, timeout_s, grace_s)
                runs.append(run)
                done[label] = run
                if not run.ok:
                    print(f"round {round_}: {_describe(run)}; the last lines of {run.log} (kept):")
                    print("\n".join(run.log.read_text().splitlines()[-20:]), flush=True)
                    keep = root  # the failed run's files stay for a look
                    raise SystemExit(2)
                if not run.subreaper:
                    print(
                        "  (no subreaper here: CPU time covers only the processes their parents waited for)"
                    )
            print(f"round {round_}: " + " | ".join(_describe(done[label]) for label in order), flush=True)
            for label in order:
                phases = wall_time_phases(done[label].lines, done[label].wall_s)
                print(f"  {label}, where the wall time went: {describe_phases(phases)}", flush=True)
            comparison = compare_reports(
                done[FUSED].experiment,
                done[UNFUSED].experiment,
                (done[FUSED].verdict, done[UNFUSED].verdict),
            )
            comparisons.append(comparison)
            print(f"round {round_}, fused vs unfused:")
            print("\n".join(comparison_lines(comparison)), flush=True)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    result = StudyBenchmark(runs, comparisons)
    verdicts = {label: {run.verdict for run in runs if run.label == label} for label in (FUSED, UNFUSED)}
    if len(verdicts[FUSED] | verdicts[UNFUSED]) == 1:
        print(f"verdict: {runs[0].verdict}")
    else:
        for label in (FUSED, UNFUSED):
            print(f"verdict, {label}: " + " | ".join(map(str, sorted(verdicts[label], key=str))))
    wall = {label: result.best(label) for label in (FUSED, UNFUSED)}
    cpu = {label: result.best(label, "cpu_s") for label in (FUSED, UNFUSED)}
    print(
        f"best of {repeats}: unfused {wall[UNFUSED]:.1f} s wall, {cpu[UNFUSED]:.1f} s CPU; fused "
        f"{wall[FUSED]:.1f} s wall, {cpu[FUSED]:.1f} s CPU; by CPU time {cpu[UNFUSED] / cpu[FUSED]:.1f}x"
    )
    print(f"fused study speed-up: {result.speed_up:.1f}x", flush=True)
    return result


# The command line.


@dataclass
class Results:
    throughput: dict[int, dict[str, float]] = field(default_factory=dict)  # part (b), by K
    study: StudyBenchmark | None = None  # part (a)


def split_study_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the benchmark's own flags, the flags after --study-args)."""
    argv = list(argv)
    if "--study-args" not in argv:
        return argv, []
    at = argv.index("--study-args")
    return argv[:at], argv[at + 1 :]


def throughput_benchmark(
    model: str, epochs: int, ks: Sequence[int], device: torch.device, repeats: int
) -> dict[int, dict[str, float]]:
    """Part (b): prints a row per K and the throughput headline."""
    print(
        f"digits {model}, {OPTIMIZER}, {epochs} epoch(s), device {device}, "
        f"{torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print("member-epochs/s (best of the rounds); ratios: fused over the peer, by wall clock | by CPU time")
    print(
        f"{'K':>4} {'fused':>9} {'loop':>9} {'plain':>9}   {'fused/loop':>17} {'fused/plain':>17}  val diff"
    )
    measure(1, model, 1, device, 1)  # warm-up, not shown: first imports, data loading, allocator
    results: dict[int, dict[str, float]] = {}
    for count in ks:
        r = measure(count, model, epochs, device, repeats)
        results[count] = r
        print(
            f"{count:>4} {r['fused']:>9.2f} {r['loop']:>9.2f} {r['plain']:>9.2f}   "
            f"{r['fused'] / r['loop']:>7.2f}x | {r['fused_cpu'] / r['loop_cpu']:>6.2f}x "
            f"{r['fused'] / r['plain']:>7.2f}x | {r['fused_cpu'] / r['plain_cpu']:>6.2f}x  {r['worst']:.1e}",
            flush=True,
        )
    largest = results[ks[-1]]
    print(
        f"fused throughput at K={ks[-1]}: {largest['fused'] / largest['plain']:.1f}x the plain loop's "
        f"by wall clock, {largest['fused_cpu'] / largest['plain_cpu']:.1f}x by CPU time",
        flush=True,
    )
    return results


def main(argv: Sequence[str] | None = None) -> Results:
    own, study_args = split_study_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--part", default="all", choices=("a", "b", "all"), help="a: the study; b: throughput"
    )
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; the best is kept")
    parser.add_argument("--quick", action="store_true", help="(a) with --smoke; (b) K = 1 and 4, one epoch")
    study = parser.add_argument_group("part (a), the study")
    study.add_argument(
        "--study-args",
        nargs=argparse.REMAINDER,
        help="flags for both study runs (everything after it), e.g. --smoke --optimizers adam",
    )
    study.add_argument("--study-timeout", type=float, default=1800.0, help="seconds per study run")
    study.add_argument("--grace", type=float, default=30.0, help="seconds Ray gets to exit after a run")
    study.add_argument("--fuse", type=int, default=None, help="K of the fused run (default: the study's)")
    study.add_argument("--keep-results", type=Path, default=None, help="results here (default: a temp dir)")
    training = parser.add_argument_group("part (b), training throughput")
    training.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    training.add_argument("--epochs", type=int, default=3)
    training.add_argument("--ks", type=int, nargs="+", default=[1, 8, 32])
    training.add_argument("--full", action="store_true", help="add K = 128")
    training.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    training.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(own)
    reserved = [flag for flag in study_args if flag.split("=")[0] in RESERVED_STUDY_FLAGS]
    if reserved:
        parser.error(f"--study-args: {', '.join(reserved)} is the benchmark's to set")
    if args.quick and "--smoke" not in study_args:
        study_args = ["--smoke", *study_args]
    results = Results()
    if args.part in ("b", "all"):
        ks = sorted(set(args.ks + ([128] if args.full else [])))
        epochs = args.epochs
        if args.quick:
            ks, epochs = [1, 4], 1
        if args.threads:
            torch.set_num_threads(args.threads)
        results.throughput = throughput_benchmark(
            args.model, epochs, ks, torch.device(args.device), args.repeats
        )
    if args.part in ("a", "all"):
        results.study = study_benchmark(
            study_args, args.repeats, args.study_timeout, args.grace, args.fuse, args.keep_results
        )
        if not all(comparison.same_conclusion for comparison in results.study.comparisons):
            raise SystemExit(1)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == [MEASURE_FLAG]:
        _measure_command(sys.argv[2:])
    else:
        main()
