"""One Ctrl-C (or SIGTERM) stops the whole study, resumably; a second one forces.

Ray Tune catches SIGINT itself and ends only the running experiment, after which a study would go on
to its next optimizer and finally exit 0. So the study turns Tune's own handler off
(`TUNE_DISABLE_SIGINT_HANDLER`) and handles SIGINT and SIGTERM here: the first signal asks the running
`Tuner.fit` to stop the way Tune's handler would (through SIGUSR1, which Tune always listens to: it
saves the experiment state and stops its trials, so the study stays resumable) and, once `fit` returns,
`raise_if_stopped` ends the study with `StudyInterrupted`. Outside `fit` (starting Ray, writing the
report) the first signal raises `StudyInterrupted` at once. A second signal raises it
wherever the study is, without waiting for Tune's last snapshot. (Ray's core worker installs a SIGTERM
handler of its own when `ray.init` connects, which aborts the process; the handlers are installed
again around every `fit`.)

In a command-line script (`sweeps.startup.begin` ran) a signal that cannot stop Tune gracefully (one
outside `fit`, a second one, or one that also stopped the local Ray cluster, as SIGTERM to the process
group does) ends the process at once, with the resume hint, and skips the interpreter's teardown: raising
there would surface inside whatever Ray or logging was doing ("Exception ignored in ..."), and Ray's
shutdown would wait a minute for a GCS that is gone. Nothing is lost: Tune's snapshots and the study's
files are written atomically, and a resume starts from them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from optsweep.sweeps import _ray_compat, startup

SIGNALS = (signal.SIGINT, signal.SIGTERM)


HIDDEN_LOG_LINES = {
    # Tune's own hint ("Resume experiment with: Tuner.restore(...)") would contradict ours.
    "ray.tune.tune": "Tuner.restore(",
    # A trial stopped before it ever reported has no result files; Tune's ResultGrid says so, harmlessly.
    "ray.tune.analysis.experiment_analysis": "Failed to fetch metrics",
    # A trial that resumes before its files reached storage; the analysis completes it from progress.csv.
    "ray.tune.logger.logger": "Remote file not found",
    # ray.init turning token authentication on for a local Ray, and how to turn it off.
    _ray_compat.auth_notice_logger(): "Token authentication is enabled",
}
"""Ray's log lines a study interrupted and resumed would otherwise print: logger -> a part of the line."""


class _Hidden(logging.Filter):
    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    def filter(self, record: logging.LogRecord) -> bool:
        return self.part not in record.getMessage()


GCS_POLL_S = 0.25


class StudyInterrupted(KeyboardInterrupt):
    """The study was stopped by a signal; `exit_code` is 128 + its number, as a shell reports it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class StopOnSignal:
    """Signal handling for one study run (main thread only); use as a context manager."""

    def __init__(self, hint: str = "") -> None:
        """`hint`: what to print when the process ends at once (e.g. how to resume)."""
        self.received: int | None = None
        self.hint = hint
        self._in_tune = False
        self._previous: dict[int, Any] = {}
        self._env_before: str | None = None
        self._filters = [(logging.getLogger(name), _Hidden(part)) for name, part in HIDDEN_LOG_LINES.items()]
        self._local_gcs: tuple[str, int] | None = None

    def __enter__(self) -> StopOnSignal:
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only: leave them to it (and to Tune)
        _active = self
        for logger, line_filter in self._filters:
            logger.addFilter(line_filter)
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
        for logger, line_filter in self._filters:
            logger.removeFilter(line_filter)
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

    def watch_local_ray(self, gcs_address: str) -> None:
        """The study started this Ray cluster itself: its processes share the driver's process group, so
        a signal to the group (what `timeout`, `kill -- -PGID`, Slurm and systemd send) stops them too,
        and Tune's graceful stop would then wait for a GCS that is gone."""
        host, _, port = gcs_address.rpartition(":")
        self._local_gcs = (host, int(port))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"\n{name} again: stopping now, without a last snapshot.", file=sys.stderr, flush=True)
            self._leave_now_if_a_script(signum)
            raise StudyInterrupted(self.received)
        self.received = signum
        if not self._in_tune:
            self._leave_now_if_a_script(signum)
            raise StudyInterrupted(signum)
        print(
            f"\n{name}: stopping the study after saving its state (a few seconds; Ctrl-C again to force).",
            file=sys.stderr,
            flush=True,
        )
        if self._local_gcs is not None and startup.is_script():
            threading.Thread(target=self._leave_if_ray_stops, args=(signum,), daemon=True).start()
        signal.raise_signal(signal.SIGUSR1)  # Tune's own graceful stop

    def _leave_now_if_a_script(self, signum: int) -> None:
        if startup.is_script():
            startup.leave(signum, self.hint)

    def _leave_if_ray_stops(self, signum: int) -> None:
        """While Tune stops gracefully: if the local cluster's GCS stops answering (the same signal
        reached it), end the process now with the hint instead of waiting on it."""
        assert self._local_gcs is not None
        while True:
            try:
                socket.create_connection(self._local_gcs, timeout=1.0).close()
            except OSError:
                print(
                    "Ray's local processes were stopped by the same signal; the study resumes from its last "
                    "snapshot.",
                    file=sys.stderr,
                    flush=True,
                )
                startup.leave(signum, self.hint)
            time.sleep(GCS_POLL_S)


_active: StopOnSignal | None = None


def tune_running() -> contextlib.AbstractContextManager[None]:
    """`StopOnSignal.in_tune` of the active handler (none outside a study run: Tune's own applies). Outside
    the main thread this does nothing: signals reach the main thread only."""
    if _active is None or threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _active.in_tune()


def watch_local_ray(gcs_address: str) -> None:
    """See `StopOnSignal.watch_local_ray` (nothing outside a study run)."""
    if _active is not None:
        _active.watch_local_ray(gcs_address)


def reclaim() -> None:
    """After `ray.init`: take SIGINT and SIGTERM back from Ray (see `StopOnSignal.reclaim`)."""
    if _active is not None:
        _active.reclaim()
