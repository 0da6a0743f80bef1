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


def begin() -> None:
    """Until the study takes signals over (`sweeps.interrupts`): SIGINT and SIGTERM end the process at
    once with one line and exit 128 + the signal's number. Only the main thread of a process whose
    handlers are still Python's defaults (a notebook or a test runner keeps its own)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(signum) is default:
            signal.signal(signum, _leave)


def _leave(signum: int, frame: FrameType | None) -> None:
    print(f"\nInterrupted ({signal.Signals(signum).name}).", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE_BASE + signum)
