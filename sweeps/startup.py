"""How the command-line scripts start: a Ctrl-C (or SIGTERM) while their modules load is one line.

Importing the study's modules takes seconds (torch, Ray). Python's default SIGINT handler would end such
an interruption with a traceback through torch's import machinery; nothing has run yet, so there is
nothing to save. Standard library only, so that it is in place before the heavy imports.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

EXIT_CODE_BASE = 128
"""A process ended by signal N exits 128 + N, as a shell reports it."""


_script = False


def begin() -> None:
    """This process is a command-line script (see `is_script`). Until the study takes signals over
    (`sweeps.cluster.interrupts`), SIGINT and SIGTERM end the process at once with one line and exit 128 + the
    signal's number. Only in the main thread, and only for handlers that are still Python's defaults."""
    global _script
    if threading.current_thread() is not threading.main_thread():
        return
    _script = True
    for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(signum) is default:
            signal.signal(signum, _leave)


def is_script() -> bool:
    """Whether `begin` ran: the process is a command-line script, which may end itself on a signal (a
    notebook or a test that calls the study in-process gets an exception instead)."""
    return _script


def leave(signum: int, hint: str = "") -> None:
    """End the process now, as a signal that stopped it: one line (the hint, if any), exit 128 + signum.
    The interpreter's teardown is skipped on purpose (see `sweeps.cluster.interrupts`); the local Ray
    processes started by this process end with it (Ray makes them share its fate)."""
    print(f"\nInterrupted ({signal.Signals(signum).name}).{' ' + hint if hint else ''}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CODE_BASE + signum)


def _leave(signum: int, frame: FrameType | None) -> None:
    leave(signum)
