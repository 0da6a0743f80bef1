"""optsweep's public face: what a user imports. The implementation stays in the top-level layers
(optimizers/, trainables/, sweeps/, analysis/); this package only re-exports it.

Attributes load lazily so that light modules (``optsweep.vocabulary``) import without torch or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # The study
    "Study": "optsweep.sweeps.api",
    "StudyResult": "optsweep.sweeps.api",
    "StudySpec": "optsweep.sweeps.spec",
    # Errors: a user's mistake (or the world's state) in one line
    "OptsweepError": "optsweep.errors",
    "SpecError": "optsweep.sweeps.spec",
    # What is trained
    "Task": "optsweep.trainables.tasks",
    "TaskData": "optsweep.trainables.tasks",
    "Metric": "optsweep.trainables.tasks",
    "ACCURACY": "optsweep.trainables.tasks",
    "MSE": "optsweep.trainables.tasks",
    "MAE": "optsweep.trainables.tasks",
    "PERPLEXITY": "optsweep.trainables.tasks",
    "token_cross_entropy": "optsweep.trainables.tasks",
    "Target": "optsweep.vocabulary",
    # Search spaces of a user's optimizer
    "LogUniform": "optsweep.sweeps.search.spaces",
    "Uniform": "optsweep.sweeps.search.spaces",
    "OneMinusLogUniform": "optsweep.sweeps.search.spaces",
    "LogUniformOrZero": "optsweep.sweeps.search.spaces",
    "Choice": "optsweep.sweeps.search.spaces",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optsweep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
