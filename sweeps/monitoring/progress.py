"""Live progress of a sweep, one optimizer at a time, readable at a glance (Ray's own logs go to files):

    [adam 2/3] 37/120 done (12 completed, 20 stopped, 3 diverged, 2 errors), 2 running, 81 pending;
    best val_acc 0.9712 (adam-c07 seed 2: lr=0.00312, weight_decay=0, schedule=cosine); 1m12s, ETA 2m20s

(one line). On a terminal the line is redrawn in place every second; otherwise (CI, a log file) a new
plain line is printed only when something changed, at most every `interval_s` seconds, with a
heartbeat every `heartbeat_s` seconds, and always at the end.

ETA: the remaining trials of this optimizer at the rate its trials have finished so far (trials
stopped early count as finished, as they free their slot). The optimizers' trials run in one experiment,
each optimizer at the rate its share of the cluster gives it: the study ends with the last of their ETAs.

A fused group (one Tune trial, `trainables.fused_trial`) counts as its members, each as the trial it
would have been alone: a member the group went on without was stopped early (or diverged).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TextIO

from ray import tune

from optsweep.sweeps.record.trial_identity import ConfigurationIds
from optsweep.vocabulary import (
    DEFAULT_TARGET,
    DIVERGED_FLAG,
    EPOCH,
    Target,
    is_measurement,
    member_configs,
    member_results,
)

TERMINAL_REDRAW_S = 1.0


class ProgressLine(tune.Callback):
    """Progress of one optimizer in the study's Tune experiment (`optimizer`: the trials whose config names
    it; None: every trial); `position` is (k, n): the k-th optimizer of n."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        optimizer: str | None = None,
        max_epochs: int | None = None,
        position: tuple[int, int] | None = None,
        target: Target = DEFAULT_TARGET,
        interval_s: float = 10.0,
        heartbeat_s: float = 120.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.optimizer = optimizer
        self.max_epochs = max_epochs
        self.position = position
        self.target = target
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.stream = stream
        self.clock = clock
        self._started: float | None = None
        self._last_print = -math.inf
        self._last_line = ""
        self._identities = ConfigurationIds()
        self._member_results: dict[tuple[str, int], dict[str, Any]] = {}  # a fused member's last result

    # Tune pickles its callbacks with the experiment; the output stream stays behind.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "stream": None}

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        now = self._now()
        since = now - self._last_print
        if self._is_terminal():
            if since >= TERMINAL_REDRAW_S:
                self._print(self.line(trials), final=False)
            return
        if since >= self.interval_s:
            line = self.line(trials)
            if _without_times(line) != _without_times(self._last_line) or since >= self.heartbeat_s:
                self._print(line, final=False)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._print(self.line(trials), final=True)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        for member, metrics in member_results(result).items():
            self._member_results[(trial.trial_id, member)] = metrics

    # ---------------------------------------------------------------------------------- the line
    def line(self, trials: list[Any]) -> str:
        """The progress line for these trials (Tune's Trial objects, or anything with trial_id,
        status, config and last_result)."""
        if self.optimizer is not None:
            trials = [t for t in trials if (t.config or {}).get("optimizer") == self.optimizer]
        trials = self._members(trials)
        counts = self._counts(trials)
        done = counts["completed"] + counts["stopped"] + counts["diverged"] + counts["errors"]
        head = f"[{self.label}" + (f" {self.position[0]}/{self.position[1]}" if self.position else "") + "]"
        details = [f"{counts['completed']} completed"]
        details += [f"{counts[k]} {k}" for k in ("stopped", "diverged", "errors") if counts[k]]
        pending = max(self.total - len(trials), 0) + counts["pending"]
        parts = [
            f"{head} {done}/{self.total} done ({', '.join(details)}), {counts['running']} running, "
            f"{pending} pending"
        ]
        best = self._best(trials)
        if best:
            parts.append(best)
        parts.append(self._times(done))
        return "; ".join(parts)

    def _members(self, trials: list[Any]) -> list[Any]:
        """The trials with each fused group replaced by its members (see the module docstring)."""
        expanded = []
        for trial in trials:
            members = member_configs(trial.config or {})
            if not members:
                expanded.append(trial)
                continue
            group_epoch = _epoch(trial.last_result or {})
            for index, member in enumerate(members):
                last = self._member_results.get((trial.trial_id, index), {})
                left = bool(last) and (last.get(DIVERGED_FLAG) is True or _epoch(last) < group_epoch)
                expanded.append(
                    SimpleNamespace(
                        trial_id=f"{trial.trial_id}-{index:03d}",
                        status="TERMINATED" if left else trial.status,
                        config=member,
                        last_result=last,
                    )
                )
        return expanded

    def _counts(self, trials: list[Any]) -> dict[str, int]:
        counts = dict.fromkeys(("completed", "stopped", "diverged", "errors", "running", "pending"), 0)
        for trial in trials:
            result = trial.last_result or {}
            if trial.status == "ERROR":
                counts["errors"] += 1
            elif trial.status == "TERMINATED":
                if result.get(DIVERGED_FLAG) is True:
                    counts["diverged"] += 1
                elif self.max_epochs is not None and _epoch(result) < self.max_epochs:
                    counts["stopped"] += 1
                else:
                    counts["completed"] += 1
            elif trial.status == "RUNNING":
                counts["running"] += 1
            else:
                counts["pending"] += 1
        return counts

    def _best(self, trials: list[Any]) -> str:
        key = self.target.best_key
        best_trial, best_value = None, math.nan
        for trial in sorted(trials, key=lambda t: t.trial_id):
            value = (trial.last_result or {}).get(key)
            # A diverged trial's best is the finite sentinel (for Tune's schedulers), never a value to show.
            if is_measurement(value) and self.target.better(value, best_value):
                best_trial, best_value = trial, float(value)
        if best_trial is None:
            return ""
        self._identities.update(trials)
        identity = self._identities.of(best_trial)
        who = identity.config_id + (f" seed {identity.seed}" if identity.seed is not None else "")
        settings = identity.short_hyperparameters()
        return f"best {self.target.key} {best_value:.4f} ({who}{': ' + settings if settings else ''})"

    def _times(self, done: int) -> str:
        elapsed = self._now() - (self._started if self._started is not None else self._now())
        text = _duration(elapsed)
        remaining = self.total - done
        if remaining <= 0:
            return text
        if done == 0 or elapsed <= 0:
            return f"{text}, ETA unknown until a trial finishes"
        per_trial = elapsed / done
        return f"{text}, ETA {_duration(remaining * per_trial)}"

    # ------------------------------------------------------------------------------------ output
    def _now(self) -> float:
        now = self.clock()
        if self._started is None:
            self._started = now
        return now

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _is_terminal(self) -> bool:
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def _print(self, line: str, *, final: bool) -> None:
        self._last_print = self._now()
        self._last_line = line
        out = self._out()
        if self._is_terminal():
            width = shutil.get_terminal_size().columns
            # A redraw only works on one screen line: cut it to the terminal's width.
            shown = line if final or len(line) < width else line[: max(width - 2, 10)] + "…"
            out.write("\r\033[K" + shown + ("\n" if final else ""))
        else:
            out.write(line + "\n")
        out.flush()


def _epoch(result: dict[str, Any]) -> int:
    value = result.get(EPOCH, result.get("training_iteration", 0))
    return int(value) if isinstance(value, int | float) and math.isfinite(value) else 0


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _without_times(line: str) -> str:
    """The line without its clock part: a changed elapsed time alone is no news."""
    return line.rsplit("; ", 1)[0]
