"""Start-up: how long optsweep's entry points take to import, in fresh processes, against `import torch`.

    python benchmarks/startup.py [--repeats N] [--quick]

Every entry point (the command line's --help, `optsweep.Task`, a trial process's imports, the driver's)
runs in a fresh Python process, N rounds, the entry points in a rotating order within each round so that
load drifts affect them alike; `import torch` alone runs in the same rounds as the peer, since nothing
that trains a model can start faster. Prints the median and the minimum wall seconds of each, the ratio
of the medians to torch's, and the load average before and after (on a shared machine the figures mean
little without it). --quick: one round (the suite runs it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = "import torch"
DEFAULT_REPEATS = 5
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class EntryPoint:
    label: str
    argv: tuple[str, ...]  # after the interpreter


def _code(text: str) -> EntryPoint:
    return EntryPoint(text, ("-c", text))


def entry_points() -> list[EntryPoint]:
    """The peer first, then what a user and Ray start: the command line, the API, a trial, the driver."""
    script = REPO / "sweeps" / "adam_vs_sgd.py"
    points = [_code(PEER), EntryPoint("python sweeps/adam_vs_sgd.py --help", (str(script), "--help"))]
    if (REPO / "optsweep" / "__main__.py").is_file():
        points.append(EntryPoint("python -m optsweep --help", ("-m", "optsweep", "--help")))
    points += [
        _code("import optsweep; optsweep.Task"),
        _code("import optsweep.trainables.fused_trial"),
        _code("from optsweep.sweeps.runner import study"),
    ]
    return points


def time_once(point: EntryPoint, cwd: str) -> float:
    """Wall seconds of one fresh process; a failing entry point is an error, not a figure."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *point.argv], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{point.label!r} exited with {done.returncode}: {tail}")
    return elapsed


def measure(points: Sequence[EntryPoint], repeats: int) -> dict[str, list[float]]:
    """Seconds per entry point over `repeats` rounds; round r starts at entry point r (rotating order).
    Run outside the repository, as a user would (the working directory shadows no package)."""
    seconds: dict[str, list[float]] = {point.label: [] for point in points}
    with tempfile.TemporaryDirectory(prefix="optsweep-startup-") as cwd:
        for round_ in range(repeats):
            order = [points[(round_ + k) % len(points)] for k in range(len(points))]
            for point in order:
                seconds[point.label].append(time_once(point, cwd))
    return seconds


def table(seconds: dict[str, list[float]]) -> list[str]:
    peer = statistics.median(seconds[PEER])
    width = max(len(label) for label in seconds)
    lines = [f"  {'entry point':<{width}}  median s   min s   x import torch"]
    for label, values in seconds.items():
        median = statistics.median(values)
        lines.append(f"  {label:<{width}}  {median:8.2f}  {min(values):6.2f}   {median / peer:6.2f}")
    return lines


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help=f"rounds (default {DEFAULT_REPEATS})"
    )
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats} is invalid: give an integer >= 1")
    if args.quick:
        args.repeats = 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, list[float]]:
    args = parse_args(argv)
    points = entry_points()
    before = _load()
    seconds = measure(points, args.repeats)
    after = _load()
    print(
        f"start-up, {args.repeats} fresh process(es) per entry point, alternating; "
        f"load average (1, 5, 15 min) before {before}, after {after}; {os.cpu_count()} CPUs"
    )
    print("\n".join(table(seconds)))
    return seconds


if __name__ == "__main__":
    main()
