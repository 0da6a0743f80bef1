"""Fault injection for the fault-tolerance tests, driven by marker files (the Ray Tune habit).

When `OPTSWEEP_FAULT_DIR` is set, a worker of rank r that finds the file `crash-rank<r>-epoch<e>` there
in the middle of epoch e claims it (renames it, so the fault fires once) and dies at once with
`os._exit(1)`, as a killed process would: no cleanup, no exception handling.

The study's driver has fault points too (`signal_marker`): once every optimizer's experiment has received
N trial results, a marker `signal-<SIGNAL>-<target>-after-<N>-results` is claimed and the signal sent to
the driver alone (`driver`, as `kill PID` does) or to its whole process group (`group`, what Ctrl-C in a
terminal, `timeout` or `kill -- -PGID` do). A test then stops a study at a known point instead of racing
the machine's load.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

ENV = "OPTSWEEP_FAULT_DIR"


def crash_marker(directory: str | Path, rank: int, epoch: int) -> Path:
    return Path(directory) / f"crash-rank{rank}-epoch{epoch}"


def maybe_crash(rank: int, epoch: int) -> None:
    directory = os.environ.get(ENV)
    if not directory:
        return
    marker = crash_marker(directory, rank, epoch)
    try:
        marker.rename(marker.with_name(marker.name + ".fired"))
    except FileNotFoundError:
        return
    os._exit(1)


SIGNAL_TARGETS = ("driver", "group")


def signal_marker(directory: str | Path, signum: int, target: str, results: int) -> Path:
    if target not in SIGNAL_TARGETS:
        raise ValueError(f"invalid signal target {target!r}; allowed: {', '.join(SIGNAL_TARGETS)}")
    return Path(directory) / f"signal-{signal.Signals(signum).name}-{target}-after-{results}-results"


_results: dict[str, dict[str, int]] = {}
_results_lock = threading.Lock()


def count_result(study: str, experiment: str, experiments: int) -> None:
    """The driver's side: one more trial result for `experiment`, one of the `experiments` of `study`; once
    each has N results, claim and send the signal markers for N."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    with _results_lock:
        counts = _results.setdefault(study, {})
        counts[experiment] = counts.get(experiment, 0) + 1
        if len(counts) < experiments:
            return
        reached = min(counts.values())
    for marker in Path(directory).glob(f"signal-*-after-{reached}-results"):
        _, name, target, *_ = marker.name.split("-")
        try:
            marker.rename(marker.with_name(marker.name + ".fired"))
        except FileNotFoundError:
            continue  # claimed by another experiment's thread
        signum = signal.Signals[name]
        if target == "group":
            os.killpg(os.getpgrp(), signum)
        else:
            os.kill(os.getpid(), signum)
