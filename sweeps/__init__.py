"""Optimizer studies on Ray Tune: the study spec and its doors (the Python API, the command line, study
files), the study scripts, and the subpackages that run them (runner, search, early_stopping, record,
monitoring, cluster)."""

from optsweep.sweeps import _moved_modules

_moved_modules.install()
