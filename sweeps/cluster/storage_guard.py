"""Stop a sweep cleanly before its storage fills up or after it stops being writable.

Ray Tune writes its experiment state and trial results to the storage path throughout a sweep. On a
full disk those writes fail half-way: trials error out one after another and a truncated experiment
state can no longer be restored. So the sweep checks the (local) storage every few seconds and, below
a safety margin of free space or when a probe write fails, stops with `StorageError` while everything
on disk is still whole; the same command resumes the experiment once space is freed.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Any

from ray import tune

from optsweep.errors import OptsweepError

MIN_FREE_ENV = "OPTSWEEP_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 256


class StorageError(RuntimeError):
    """The storage path is (nearly) full or not writable; the message is one line for the user."""


class InvalidSettingError(OptsweepError):
    """A bad OPTSWEEP_MIN_FREE_MB: the user's input, not the storage's state."""


def min_free_bytes() -> int:
    raw = os.environ.get(MIN_FREE_ENV, str(DEFAULT_MIN_FREE_MB))
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = math.nan
    if not 0 <= megabytes < math.inf:
        raise InvalidSettingError(f"{MIN_FREE_ENV}={raw!r} is invalid: it must be a number of megabytes >= 0")
    return int(megabytes * 2**20)


def check(path: str, min_free: int) -> None:
    """Raise StorageError if `path` has less than `min_free` bytes free or cannot be written."""
    try:
        stats = os.statvfs(path)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".optsweep-write-check-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as error:
        raise StorageError(f"the storage path {path} is not writable ({error.strerror or error})") from None
    free = stats.f_bavail * stats.f_frsize
    if free < min_free:
        raise StorageError(
            f"the storage path {path} has {free / 2**20:.0f} MB free, below the {min_free / 2**20:.0f} MB "
            f"that optsweep keeps free (set {MIN_FREE_ENV} to change it)"
        )


def check_free_space(path: str, min_free: int) -> None:
    """The cheap half of `check` (no write), for every checkpoint."""
    try:
        stats = os.statvfs(path)
    except OSError as error:
        raise StorageError(f"the storage path {path} is not accessible ({error.strerror or error})") from None
    if stats.f_bavail * stats.f_frsize < min_free:
        check(path, min_free)  # raises with the full message


class StorageGuard(tune.Callback):
    """Tune callback: checks the free space after every checkpoint a trial persists (that is when the
    storage fills) and `check`s writability at most every `interval_s` seconds; a StorageError aborts
    `Tuner.fit` (Tune cleans up its trials and leaves the last experiment snapshot in place)."""

    def __init__(self, path: str, min_free: int, interval_s: float = 2.0) -> None:
        self.path = path
        self.min_free = min_free
        self.interval_s = interval_s
        self._last_check = 0.0
        self._found: StorageError | None = None

    def on_checkpoint(
        self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        # Tune logs and swallows exceptions raised while it handles a checkpoint: keep it for on_step_end.
        try:
            check_free_space(self.path, self.min_free)
        except StorageError as error:
            self._found = error

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._found is not None:
            raise self._found
        if time.monotonic() - self._last_check >= self.interval_s:
            self._last_check = time.monotonic()
            check(self.path, self.min_free)
