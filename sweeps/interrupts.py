"""One Ctrl-C (or SIGTERM) stops the whole study, resumably; a second one forces.

Ray Tune catches SIGINT itself and ends only the running experiment, after which a study would go on
to its next optimizer and finally exit 0. So the study turns Tune's own handler off
(`TUNE_DISABLE_SIGINT_HANDLER`) and handles SIGINT and SIGTERM here: the first signal asks the running
`Tuner.fit` to stop the way Tune's handler would (through SIGUSR1, which Tune always listens to: it
saves the experiment state and stops its trials, so the study stays resumable; optimizers run side by
side in threads hear it through `sweeps.side_by_side`, which stops them all) and, once `fit` returns,
`raise_if_stopped` ends the study with `StudyInterrupted`. Outside `fit` (starting Ray, writing the
report) the first signal raises `StudyInterrupted` at once. A second signal raises it
wherever the study is, without waiting for Tune's last snapshot. (Ray's core worker installs a SIGTERM
handler of its own when `ray.init` connects, which aborts the process; the handlers are installed
again around every `fit`.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_LOGGER = "ray.tune.tune"


def _hide_tune_resume_hint(record: logging.LogRecord) -> bool:
    return "Tuner.restore(" not in record.getMessage()


class StudyInterrupted(KeyboardInterrupt):
    """The study was stopped by a signal; `exit_code` is 128 + its number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Signal handling for one study run (main thread only); use as a context manager."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._in_tune = False
        self._previous: dict[int, Any] = {}
        self._env_before: str | None = None

    def __enter__(self) -> StopOnSignal:
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only: leave them to it (and to Tune)
        _active = self
        # Tune's own hint ("Resume experiment with: Tuner.restore(...)") would contradict ours.
        logging.getLogger(TUNE_LOGGER).addFilter(_hide_tune_resume_hint)
        self._env_before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        # Tune installs its own SIGUSR1 handler during fit; until then a stray SIGUSR1 must not kill us.
        self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        if _active is not self:
            return
        _active = None
        logging.getLogger(TUNE_LOGGER).removeFilter(_hide_tune_resume_hint)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._env_before is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._env_before

    @contextlib.contextmanager
    def in_tune(self) -> Iterator[None]:
        """Around `Tuner.fit`: a first signal then stops Tune gracefully instead of raising."""
        self.raise_if_stopped()
        self.reclaim()
        outer, self._in_tune = self._in_tune, True  # nested: the outer `in_tune` still runs Tune
        try:
            yield
        finally:
            self._in_tune = outer
        self.raise_if_stopped()

    def reclaim(self) -> None:
        """Install the handlers again: Ray's core worker (started by ray.init, after __enter__) installs
        its own C-level SIGTERM handler, which aborts the process (exit -6)."""
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def raise_if_stopped(self) -> None:
        if self.received is not None:
            raise StudyInterrupted(self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"\n{name} again: stopping now, without a last snapshot.", file=sys.stderr, flush=True)
            raise StudyInterrupted(self.received)
        self.received = signum
        if not self._in_tune:
            raise StudyInterrupted(signum)
        print(
            f"\n{name}: stopping the study after saving its state (a few seconds; Ctrl-C again to force).",
            file=sys.stderr,
            flush=True,
        )
        signal.raise_signal(signal.SIGUSR1)  # Tune's own graceful stop


_active: StopOnSignal | None = None


def tune_running() -> contextlib.AbstractContextManager[None]:
    """`StopOnSignal.in_tune` of the active handler (none outside a study run: Tune's own applies).

    Outside the main thread (a fit run side by side with others, see `sweeps.side_by_side`) this does
    nothing: signals reach the main thread, whose own `tune_running` spans every concurrent fit and
    whose SIGUSR1 stops them all."""
    if _active is None or threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _active.in_tune()


def reclaim() -> None:
    """After `ray.init`: take SIGINT and SIGTERM back from Ray (see `StopOnSignal.reclaim`)."""
    if _active is not None:
        _active.reclaim()
