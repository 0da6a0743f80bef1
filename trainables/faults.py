"""Fault injection for the fault-tolerance tests, driven by marker files (the Ray Tune habit).

When `OPTSWEEP_FAULT_DIR` is set, a worker of rank r that finds the file `crash-rank<r>-epoch<e>` there
in the middle of epoch e claims it (renames it, so the fault fires once) and dies at once with
`os._exit(1)`, as a killed process would: no cleanup, no exception handling.
"""

from __future__ import annotations

import os
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
