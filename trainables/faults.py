"""Fault injection for the fault-tolerance tests, driven by marker files (the Ray Tune habit).

When `OPTSWEEP_FAULT_DIR` is set, a worker of rank r that finds the file `crash-rank<r>-epoch<e>` there
in the middle of epoch e claims it (renames it, so the fault fires once) and dies at once with
`os._exit(1)`, as a killed process would: no cleanup, no exception handling.

The study's driver has fault points too (`signal_marker`): once every optimizer's experiment (or any one)
has received N trial results, a marker `signal-<SIGNAL>-<target>-after-<N>-results-of-<every|any>` is
claimed and the signal sent to the driver alone (`driver`, as `kill PID` does) or to its whole process
group (`group`, what Ctrl-C in a terminal, `timeout` or `kill -- -PGID` do). A test then stops a study
at a known point instead of racing the machine's load.
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
SIGNAL_SCOPES = ("every", "any")


def signal_marker(
    directory: str | Path, signum: int, target: str, results: int, scope: str = "every"
) -> Path:
    """The marker that sends `signum` to `target` once `every` optimizer's experiment (or `any` one) has
    received `results` trial results."""
    if target not in SIGNAL_TARGETS:
        raise ValueError(f"invalid signal target {target!r}; allowed: {', '.join(SIGNAL_TARGETS)}")
    if scope not in SIGNAL_SCOPES:
        raise ValueError(f"invalid signal scope {scope!r}; allowed: {', '.join(SIGNAL_SCOPES)}")
    return (
        Path(directory) / f"signal-{signal.Signals(signum).name}-{target}-after-{results}-results-of-{scope}"
    )


_results: dict[str, dict[str, int]] = {}
_results_lock = threading.Lock()


def count_result(study: str, experiment: str, experiments: int) -> None:
    """The driver's side: one more trial result for `experiment`, one of the `experiments` of `study`; then
    claim and send the signal markers whose count every experiment (or any one) has reached."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    with _results_lock:
        counts = _results.setdefault(study, {})
        counts[experiment] = counts.get(experiment, 0) + 1
        reached = {"any": counts[experiment]}
        if len(counts) == experiments:
            reached["every"] = min(counts.values())
    for scope, results in reached.items():
        for marker in Path(directory).glob(f"signal-*-after-{results}-results-of-{scope}"):
            _, name, target, *_ = marker.name.split("-")
            try:
                marker.rename(marker.with_name(marker.name + ".fired"))
            except FileNotFoundError:
                continue  # claimed by another experiment's thread
            _send(signal.Signals[name], target)


def _send(signum: int, target: str) -> None:
    if target == "group":
        os.killpg(os.getpgrp(), signum)
    else:
        os.kill(os.getpid(), signum)
