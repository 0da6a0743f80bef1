"""How busy a study keeps the cluster: its optimizers side by side (one study) vs one after another.

    python benchmarks/side_by_side.py [--cpus 2] [--storage DIR] [-- study flags...]

Starts one local Ray with `--cpus` CPUs and runs the same 3-optimizer study twice: side by side (one
`adam_vs_sgd` study, as the study runs now) and in the old order (one study per optimizer, one after
another: each optimizer's Tune experiment runs to its end before the next starts). While each runs,
the CPU time of Ray's worker processes (the trials) is sampled from /proc every `--interval` seconds.
Printed per mode: the wall time; the time during which fewer than `--cpus` trials were running (Tune's
own trial statuses, summed over the optimizers: the idle tail and gaps); the mean utilisation of the
`--cpus` cores by trials and the time during which fewer than `--cpus` - 0.5 cores were busy with
trials (CPU time of the trial processes: other load on the machine lowers these). The old
order writes a report per study; those report writes, but the last, are left out of its figures (the
old study wrote one report). Linux only (/proc). Other load on the machine lowers both modes' figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OPTIMIZERS = ("sgd", "adam", "adamw")
# The protocol tests' study: 6 configurations x 2 seeds, 8 epochs, rungs at epochs 1 and 3.
STUDY = ["--smoke", "--num-samples", "6", "--seeds", "2", "--max-epochs", "8", "--lr-max", "0.05"]
TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _worker_cpu_s(root: int) -> float:
    """CPU seconds used so far by the Ray worker processes (`ray::...`) below `root`."""
    total = 0
    for pid in _descendants(root):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


class Sampler:
    """Busy cores (worker CPU seconds per second) in every interval while it runs."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []  # (start, end, busy cores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seen: dict[int, float] = {}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        root = os.getpid()
        last_t, last_cpu = time.monotonic(), _worker_cpu_s(root)
        while not self._stop.wait(self.interval_s):
            now, cpu = time.monotonic(), _worker_cpu_s(root)
            # A worker that exits takes its CPU time with it: never count a negative interval.
            self.samples.append((last_t, now, max(cpu - last_cpu, 0.0) / (now - last_t)))
            last_t, last_cpu = now, cpu


class RunningTrials:
    """Tune's own view: how many trials of each optimizer are RUNNING, after every step of its loop."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []  # (time, optimizer, running)
        self.lock = threading.Lock()

    def record(self, optimizer: str, running: int) -> None:
        with self.lock:
            self.events.append((time.monotonic(), optimizer, running))

    def seconds_under(self, slots: int, start: float, end: float) -> float:
        """Time between `start` and `end` during which fewer than `slots` trials ran, in all."""
        latest: dict[str, int] = {}
        under, last = 0.0, start
        for moment, optimizer, running in sorted(self.events):
            if start <= moment <= end:
                if sum(latest.values()) < slots:
                    under += moment - last
                last = moment
            latest[optimizer] = running
        if sum(latest.values()) < slots:
            under += end - last
        return under


RUNNING = RunningTrials()


class Record(tune.Callback):
    """Tune pickles its callbacks with the experiment: this one finds the recorder by name."""

    def __init__(self, optimizer: str) -> None:
        self.optimizer = optimizer
        self.module = __name__

    # cloudpickle copies a script's classes by value, with the globals they use: not the recorder's lock.
    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        running = sum(trial.status == "RUNNING" for trial in trials)
        sys.modules[self.module].RUNNING.record(self.optimizer, running)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        sys.modules[self.module].RUNNING.record(self.optimizer, 0)


def figures(
    samples: list[tuple[float, float, float]], cpus: int, excluded: list[tuple[float, float]]
) -> dict[str, float]:
    kept = [s for s in samples if not any(a <= (s[0] + s[1]) / 2 <= b for a, b in excluded)]
    wall = sum(end - start for start, end, _ in kept)
    busy = sum((end - start) * cores for start, end, cores in kept)
    under = sum(end - start for start, end, cores in kept if cores < cpus - 0.5)
    return {"wall_s": wall, "utilisation": busy / (cpus * wall) if wall else 0.0, "under_full_s": under}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--storage", default=None)
    parser.add_argument("study", nargs="*", help="study flags (default: the protocol tests' study)")
    args = parser.parse_args(argv)
    study_flags = args.study or STUDY
    storage = args.storage or tempfile.mkdtemp(prefix="side-by-side-")

    import ray
    from optsweep.sweeps import adam_vs_sgd, study

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reports: list[tuple[float, float]] = []
    write_report = study._write_report

    def timed_report(*a: Any, **k: Any) -> Any:
        began = time.monotonic()
        try:
            return write_report(*a, **k)
        finally:
            reports.append((began, time.monotonic()))

    study._write_report = timed_report  # type: ignore[assignment]
    running = RUNNING
    callbacks = study._callbacks
    study._callbacks = lambda a, optimizer, *rest, **k: [  # type: ignore[assignment]
        *callbacks(a, optimizer, *rest, **k),
        Record(optimizer),
    ]
    base = [*study_flags, "--storage-path", storage]
    results = {}
    with Sampler(args.interval) as side:
        assert adam_vs_sgd.main([*base, "--optimizers", ",".join(OPTIMIZERS), "--name", "side-by-side"]) == 0
    results["side by side"] = figures(side.samples, args.cpus, [])
    results["side by side"]["under_slots_s"] = running.seconds_under(
        args.cpus, side.samples[0][0], side.samples[-1][1]
    )
    reports.clear()
    running.events.clear()
    with Sampler(args.interval) as sequential:
        for optimizer in OPTIMIZERS:
            assert adam_vs_sgd.main([*base, "--optimizers", optimizer, "--name", f"alone-{optimizer}"]) == 0
    results["one after another"] = figures(sequential.samples, args.cpus, reports[:-1])
    under = running.seconds_under(args.cpus, sequential.samples[0][0], sequential.samples[-1][1])
    results["one after another"]["under_slots_s"] = under - sum(b - a for a, b in reports[:-1])
    print(f"\n{len(OPTIMIZERS)} optimizers, study flags {' '.join(study_flags)}, {args.cpus} CPUs:")
    for mode, found in results.items():
        print(
            f"  {mode:18s} {found['wall_s']:6.1f} s; fewer than {args.cpus} trials running for "
            f"{found['under_slots_s']:.1f} s; trials used {found['utilisation']:.0%} of the cores "
            f"(fewer than {args.cpus - 0.5:g} cores busy for {found['under_full_s']:.1f} s)"
        )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
