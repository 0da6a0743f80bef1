"""The modules' old import paths, from before sweeps/ was grouped into subpackages, kept importable.

Experiments written before the move hold pickles (Tune's `tuner.pkl`: the schedulers, searchers and
callbacks of the study) that name their classes by the old paths, e.g. `optsweep.sweeps.halving`. An
import of an old path gets the module at its new path, the same module object, so those experiments
still report and resume. The finder is consulted only for the old names, and imports nothing itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "study": "runner",
    "confirmation": "runner",
    "fusion": "runner",
    "safeguards": "runner",
    "spaces": "search",
    "contenders": "search",
    "halving": "early_stopping",
    "scheduling": "early_stopping",
    "identity": "record",
    "study_record": "record",
    "trial_identity": "record",
    "resume": "record",
    "trust": "record",
    "reproduce": "record",
    "tracking": "monitoring",
    "tracking_callbacks": "monitoring",
    "member_tracking": "monitoring",
    "progress": "monitoring",
    "ray_connect": "cluster",
    "feasibility": "cluster",
    "shipping": "cluster",
    "storage_guard": "cluster",
    "retention": "cluster",
    "interrupts": "cluster",
    "preflight": "cluster",
}
"""Old module name (directly under optsweep.sweeps) -> the subpackage it moved into."""

PACKAGE = __name__.rpartition(".")[0]


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        name = spec.name.rpartition(".")[2]
        return importlib.import_module(f"{PACKAGE}.{MOVED[name]}.{name}")

    def exec_module(self, module: ModuleType) -> None:
        pass  # the module at its new path is already executed


def install() -> None:
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())
