"""A terse progress line on the terminal while a sweep runs (Ray's own logs go to files)."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray import tune

from .scheduling import METRIC


class ProgressLine(tune.Callback):
    """At most every `interval_s` seconds when something changed (and at least every `heartbeat_s`), and
    at the end: trials done/running/pending and the best so far."""

    def __init__(self, label: str, total: int, interval_s: float = 10.0, heartbeat_s: float = 120.0) -> None:
        self.label = label
        self.total = total
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self._last_print = 0.0
        self._last_line = ""

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        since = time.monotonic() - self._last_print
        if since >= self.interval_s:
            line = self._line(trials)
            if line != self._last_line or since >= self.heartbeat_s:
                self._print(line)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._print(self._line(trials))

    def _print(self, line: str) -> None:
        self._last_print = time.monotonic()
        self._last_line = line
        print(line, file=sys.stdout, flush=True)

    def _line(self, trials: list[Any]) -> str:
        status = [t.status for t in trials]
        done = status.count("TERMINATED") + status.count("ERROR")
        diverged = sum(1 for t in trials if (t.last_result or {}).get("diverged"))
        best = max(
            ((t.last_result or {}).get("best_val_acc", float("nan")) for t in trials if t.last_result),
            default=float("nan"),
        )
        parts = [
            f"[{self.label}] {done}/{self.total} trials done",
            f"{status.count('RUNNING')} running",
            f"{max(self.total - len(trials), 0) + status.count('PENDING')} pending",
        ]
        if diverged or status.count("ERROR"):
            parts.append(f"{diverged} diverged, {status.count('ERROR')} errors")
        if best == best:
            parts.append(f"best {METRIC} so far {best:.4f}")
        return ", ".join(parts)
