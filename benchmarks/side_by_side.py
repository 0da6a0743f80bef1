"""How busy a study keeps the cluster: its optimizers side by side (one study, one Tune experiment whose
trials are every optimizer's) vs one after another.

    python benchmarks/side_by_side.py [--cpus 2] [--storage DIR] [--quick] [--num-samples N] [--seeds S]
        [--max-epochs E]

Starts one local Ray with `--cpus` CPUs and runs the same 3-optimizer study twice through the public API
(`optsweep.Study(...).run`): side by side (one study of the three optimizers, as the study runs) and
in the old order (one study per optimizer, one after another: each optimizer's trials run to their end
before the next starts). While each runs, the CPU time of Ray's worker processes (the trials) is sampled
from /proc every `--interval` seconds. Printed per mode: the wall time; the time during which fewer than
`--cpus` trials were running (read from the study's own progress lines, "[<optimizer> ...] ... N
running", timestamped as they are printed, summed over the optimizers: the idle tail and gaps); the mean
utilisation of the `--cpus` cores by trials and the time during which fewer than `--cpus` - 0.5 cores
were busy with trials (CPU time of the trial processes: other load on the machine lowers these). The old
order writes a report per study; those report writes (from a study's last progress line to its end),
but the last, are left out of its figures (the old study wrote one report). Linux only (/proc). Other
load on the machine lowers both modes' figures. `--quick`: 2 configurations x 1 seed, 2 epochs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")
# The protocol tests' study: 6 configurations x 2 seeds, 8 epochs, rungs at epochs 1 and 3.
STUDY = {"num_samples": 6, "seeds": 2, "max_epochs": 8}
QUICK = {"num_samples": 2, "seeds": 1, "max_epochs": 2}
LR_MAX = 0.05
PROGRESS_LINE = re.compile(r"^\[(?P<label>[^\]\s]+)[^\]]*\].*?\b(?P<running>\d+) running\b")
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


class TimedLines(io.TextIOBase):
    """A stdout that keeps each line the study prints with the time it arrived (monotonic)."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._held = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *whole, self._held = (self._held + text).split("\n")
        now = time.monotonic()
        self.lines += [(now, line) for line in whole]
        return len(text)


def running_events(lines: list[tuple[float, str]]) -> list[tuple[float, str, int]]:
    """(time, optimizer, trials running) from the study's progress lines, in order."""
    events = []
    for moment, line in lines:
        match = PROGRESS_LINE.match(line)
        if match:
            events.append((moment, match["label"], int(match["running"])))
    return events


def seconds_under(events: list[tuple[float, str, int]], slots: int, start: float, end: float) -> float:
    """Time between `start` and `end` during which fewer than `slots` trials ran, in all (an optimizer
    counts 0 until its first progress line)."""
    latest: dict[str, int] = {}
    under, last = 0.0, start
    for moment, optimizer, running in sorted(events):
        if start <= moment <= end:
            if sum(latest.values()) < slots:
                under += moment - last
            last = moment
        latest[optimizer] = running
    if sum(latest.values()) < slots:
        under += end - last
    return under


def last_progress(lines: list[tuple[float, str]]) -> float | None:
    return max((moment for moment, line in lines if PROGRESS_LINE.match(line)), default=None)


def figures(
    samples: list[tuple[float, float, float]], cpus: int, excluded: list[tuple[float, float]]
) -> dict[str, float]:
    kept = [s for s in samples if not any(a <= (s[0] + s[1]) / 2 <= b for a, b in excluded)]
    wall = sum(end - start for start, end, _ in kept)
    busy = sum((end - start) * cores for start, end, cores in kept)
    under = sum(end - start for start, end, cores in kept if cores < cpus - 0.5)
    return {"wall_s": wall, "utilisation": busy / (cpus * wall) if wall else 0.0, "under_full_s": under}


def study(optimizers: tuple[str, ...], name: str, shape: dict[str, int]) -> Any:
    import optsweep

    return optsweep.Study(
        "digits", optimizers=list(optimizers), confirm_seeds=0, lr_max=LR_MAX, name=name, **shape
    )


def run(
    optimizers: tuple[str, ...], name: str, shape: dict[str, int], storage: str, out: TimedLines
) -> float:
    """One study, its output into `out`; returns when its last progress line was printed."""
    began, first_line = time.monotonic(), len(out.lines)
    with contextlib.redirect_stdout(out):
        study(optimizers, name, shape).run(storage)
    return last_progress(out.lines[first_line:]) or began


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--quick", action="store_true", help="2 configurations x 1 seed, 2 epochs")
    for key, value in STUDY.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    args = parser.parse_args(argv)
    shape = {key: getattr(args, key) or (QUICK if args.quick else STUDY)[key] for key in STUDY}
    storage = args.storage or tempfile.mkdtemp(prefix="side-by-side-")
    print(
        f"{len(OPTIMIZERS)} optimizers, {shape}, lr_max {LR_MAX}, {args.cpus} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )

    import ray

    ray_was_running = ray.is_initialized()
    if not ray_was_running:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results: dict[str, dict[str, float]] = {}
    try:
        out = TimedLines()
        with Sampler(args.interval) as side:
            run(OPTIMIZERS, "side-by-side", shape, storage, out)
        results["side by side"] = figures(side.samples, args.cpus, [])
        results["side by side"]["under_slots_s"] = seconds_under(
            running_events(out.lines), args.cpus, side.samples[0][0], side.samples[-1][1]
        )
        reports: list[tuple[float, float]] = []
        out = TimedLines()
        with Sampler(args.interval) as sequential:
            for optimizer in OPTIMIZERS:
                trained = run((optimizer,), f"alone-{optimizer}", shape, storage, out)
                reports.append((trained, time.monotonic()))
        results["one after another"] = figures(sequential.samples, args.cpus, reports[:-1])
        under = seconds_under(
            running_events(out.lines), args.cpus, sequential.samples[0][0], sequential.samples[-1][1]
        )
        results["one after another"]["under_slots_s"] = under - sum(b - a for a, b in reports[:-1])
    finally:
        if not ray_was_running:
            ray.shutdown()
    for mode, found in results.items():
        print(
            f"  {mode:18s} {found['wall_s']:6.1f} s; fewer than {args.cpus} trials running for "
            f"{found['under_slots_s']:.1f} s; trials used {found['utilisation']:.0%} of the cores "
            f"(fewer than {args.cpus - 0.5:g} cores busy for {found['under_full_s']:.1f} s)"
        )
    ratio = results["one after another"]["wall_s"] / results["side by side"]["wall_s"]
    print(f"side by side: {ratio:.2f}x as fast as one after another (load average {os.getloadavg()[0]:.1f})")
    return results


if __name__ == "__main__":
    main()
