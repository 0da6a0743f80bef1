"""`python -m optsweep ...` is the `optsweep` command (see `optsweep.console`)."""

from optsweep.console import entry

entry()
