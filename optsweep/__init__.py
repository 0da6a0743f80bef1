"""optsweep's public face: what a user imports. The implementation stays in the top-level layers
(optimizers/, trainables/, sweeps/, analysis/); this package only re-exports it.

Attributes load lazily so that light modules (``optsweep.vocabulary``) import without torch or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Target": "optsweep.vocabulary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'optsweep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
