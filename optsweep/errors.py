"""optsweep's one error base. An `OptsweepError` is the user's mistake or the world's state (a bad
setting, a missing dataset, full storage), told in one line: the command line prints it as
``error: <message>`` and exits 2; in Python it is a `ValueError` with that message. Any other exception
is a bug and keeps its traceback."""

from __future__ import annotations


class OptsweepError(ValueError):
    """A user-facing error whose message is the one line the user sees."""
