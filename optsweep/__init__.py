"""optsweep's public face: what a user imports. The implementation stays in the top-level layers
(optimizers/, trainables/, sweeps/, analysis/); this package only re-exports it.

Attributes load lazily so that light modules (``optsweep.vocabulary``) import without torch or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # The study
    "Study": "sweeps.api",
    "StudyResult": "sweeps.api",
    # What is trained
    "Task": "trainables.tasks",
    "TaskData": "trainables.tasks",
    "Metric": "trainables.tasks",
    "ACCURACY": "trainables.tasks",
    "MSE": "trainables.tasks",
    "MAE": "trainables.tasks",
    "PERPLEXITY": "trainables.tasks",
    "token_cross_entropy": "trainables.tasks",
    "Target": "optsweep.vocabulary",
    # Search spaces of a user's optimizer
    "LogUniform": "sweeps.spaces",
    "Uniform": "sweeps.spaces",
    "OneMinusLogUniform": "sweeps.spaces",
    "LogUniformOrZero": "sweeps.spaces",
    "Choice": "sweeps.spaces",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optsweep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
